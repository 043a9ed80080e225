//! The VDI block map in memory: lookups (batched into host-contiguous runs) and the range of
//! entries changed since the last flush.
use super::header::{is_allocated, VdiHeader, UNALLOCATED};
use crate::blockmap::{runs, Run};

/// The block map and what must still be written back.
#[derive(Debug, Clone)]
pub struct BlockMap {
    /// One entry per guest block (see [`super::header`]).
    pub entries: Vec<u32>,
    /// Entries `[lo, hi)` changed in memory but not yet on disk.
    pub dirty: Option<(usize, usize)>,
}

impl BlockMap {
    /// Decode the on-disk map (little-endian u32s).
    pub fn decode(bytes: &[u8], count: usize) -> Self {
        let entries = bytes
            .chunks_exact(4)
            .take(count)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        BlockMap {
            entries,
            dirty: None,
        }
    }

    /// A map of `count` unallocated entries, or (static images) block `i` at slot `i`.
    pub fn new(count: u32, static_image: bool) -> Self {
        let entries = if static_image {
            (0..count).collect()
        } else {
            vec![UNALLOCATED; count as usize]
        };
        BlockMap {
            entries,
            dirty: None,
        }
    }

    /// The on-disk bytes of entries `[lo, hi)`.
    pub fn encode(&self, lo: usize, hi: usize) -> Vec<u8> {
        self.entries[lo..hi]
            .iter()
            .flat_map(|e| e.to_le_bytes())
            .collect()
    }

    /// Host offset of the first byte of guest block `idx`, if allocated.
    pub fn block_host(&self, h: &VdiHeader, idx: u64) -> Option<u64> {
        let e = *self.entries.get(idx as usize)?;
        is_allocated(e).then(|| h.block_offset(e))
    }

    /// Guest `[offset, offset+len)` as host-contiguous runs.
    pub fn runs(&self, h: &VdiHeader, offset: u64, len: u64) -> Vec<Run> {
        runs(offset, len, h.block_size as u64, |i| self.block_host(h, i))
    }

    /// Point guest block `idx` at data slot `slot` (in memory; marked dirty).
    pub fn set(&mut self, idx: usize, slot: u32) {
        self.entries[idx] = slot;
        self.dirty = Some(match self.dirty {
            None => (idx, idx + 1),
            Some((lo, hi)) => (lo.min(idx), hi.max(idx + 1)),
        });
    }
}
