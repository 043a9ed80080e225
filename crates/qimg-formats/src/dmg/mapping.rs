//! The chunk table: every blkx table's chunks, sorted by guest sector, checked not to overlap,
//! and looked up by binary search.
use super::header::{Chunk, SECTOR};
use qimg_core::{Error, Result};

/// Chunks sorted by first sector; gaps between them read as zeros.
pub struct ChunkTable {
    /// Sorted, non-overlapping chunks.
    pub chunks: Vec<Chunk>,
    /// Virtual size in bytes (end of the last chunk).
    pub size: u64,
}

impl ChunkTable {
    /// Sort and check `chunks`.
    pub fn new(mut chunks: Vec<Chunk>) -> Result<ChunkTable> {
        chunks.sort_unstable_by_key(|c| c.sector);
        for w in chunks.windows(2) {
            if w[0].sector + w[0].count > w[1].sector {
                return Err(Error::corrupt(format!(
                    "dmg: chunks overlap at sector {}",
                    w[1].sector
                )));
            }
        }
        let size = chunks.last().map_or(0, |c| (c.sector + c.count) * SECTOR);
        Ok(ChunkTable { chunks, size })
    }

    /// The chunk holding `sector` (its index), or `Err(next)`: the index of the first chunk
    /// after it (a gap, reading as zeros, up to that chunk).
    pub fn find(&self, sector: u64) -> std::result::Result<usize, usize> {
        let i = self
            .chunks
            .partition_point(|c| c.sector + c.count <= sector);
        match self.chunks.get(i) {
            Some(c) if c.sector <= sector => Ok(i),
            _ => Err(i),
        }
    }
}
