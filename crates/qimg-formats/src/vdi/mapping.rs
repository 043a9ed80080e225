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
    /// Data slots referenced by some entry (a bitset over `blocks_in_image` slots).
    used: Vec<u64>,
}

impl BlockMap {
    /// Decode the on-disk map (little-endian u32s).
    pub fn decode(bytes: &[u8], count: usize) -> Self {
        let entries = bytes
            .chunks_exact(4)
            .take(count)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::with_entries(entries)
    }

    fn with_entries(entries: Vec<u32>) -> Self {
        let mut used = vec![0u64; entries.len().div_ceil(64)];
        for &e in &entries {
            if (e as usize) < entries.len() {
                used[e as usize / 64] |= 1 << (e % 64);
            }
        }
        BlockMap {
            entries,
            dirty: None,
            used,
        }
    }

    /// True if some entry references data slot `slot`.
    pub fn slot_used(&self, slot: u32) -> bool {
        self.used
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// The first slot from `from` on (wrapping once) that no entry references.
    pub fn free_slot(&self, from: u32) -> Option<u32> {
        let n = self.entries.len() as u32;
        (from..n)
            .chain(0..from.min(n))
            .find(|&s| !self.slot_used(s))
    }

    /// A map of `count` unallocated entries, or (static images) block `i` at slot `i`.
    pub fn new(count: u32, static_image: bool) -> Self {
        let entries = if static_image {
            (0..count).collect()
        } else {
            vec![UNALLOCATED; count as usize]
        };
        Self::with_entries(entries)
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
        if (slot as usize) < self.entries.len() {
            self.used[slot as usize / 64] |= 1 << (slot % 64);
        }
        self.dirty = Some(match self.dirty {
            None => (idx, idx + 1),
            Some((lo, hi)) => (lo.min(idx), hi.max(idx + 1)),
        });
    }
}
