//! The VHD block allocation table in memory: lookups batched into host-contiguous runs, and the
//! range of entries changed since the last flush.
use super::header::BAT_UNALLOCATED;
use crate::blockmap::{runs, Run};

/// The BAT and the layout facts a lookup needs.
#[derive(Debug, Clone)]
pub struct Bat {
    /// Entries: sector number of each block's bitmap, or [`BAT_UNALLOCATED`].
    pub entries: Vec<u32>,
    /// Host offset of the table.
    pub offset: u64,
    /// Guest bytes per block.
    pub block_size: u64,
    /// Bytes of the sector bitmap before each block's data.
    pub bitmap_size: u64,
    /// Entries `[lo, hi)` changed in memory but not yet on disk.
    pub dirty: Option<(usize, usize)>,
}

impl Bat {
    /// Decode big-endian entries.
    pub fn decode(bytes: &[u8], offset: u64, block_size: u64, bitmap_size: u64) -> Self {
        Bat {
            entries: bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            offset,
            block_size,
            bitmap_size,
            dirty: None,
        }
    }

    /// Host offset of guest block `idx`'s first data byte, if allocated.
    pub fn block_host(&self, idx: u64) -> Option<u64> {
        match self.entries.get(idx as usize) {
            Some(&e) if e != BAT_UNALLOCATED => Some(e as u64 * 512 + self.bitmap_size),
            _ => None,
        }
    }

    /// End of the data of the highest allocated block (where the next block may go).
    pub fn data_end(&self) -> u64 {
        self.entries
            .iter()
            .filter(|&&e| e != BAT_UNALLOCATED)
            .map(|&e| e as u64 * 512 + self.bitmap_size + self.block_size)
            .max()
            .unwrap_or(0)
    }

    /// Guest `[offset, offset+len)` as host-contiguous runs (blocks never merge on the host:
    /// a bitmap sits between them).
    pub fn runs(&self, offset: u64, len: u64) -> Vec<Run> {
        runs(offset, len, self.block_size, |i| self.block_host(i))
    }

    /// Point block `idx` at the bitmap in host sector `sector` (in memory; marked dirty).
    pub fn set(&mut self, idx: usize, sector: u32) {
        self.entries[idx] = sector;
        self.dirty = Some(match self.dirty {
            None => (idx, idx + 1),
            Some((lo, hi)) => (lo.min(idx), hi.max(idx + 1)),
        });
    }

    /// On-disk bytes of entries `[lo, hi)`.
    pub fn encode(&self, lo: usize, hi: usize) -> Vec<u8> {
        self.entries[lo..hi]
            .iter()
            .flat_map(|e| e.to_be_bytes())
            .collect()
    }
}
