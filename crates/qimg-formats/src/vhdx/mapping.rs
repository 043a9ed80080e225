//! The Block Allocation Table: one 64-bit entry per payload block, with one sector-bitmap entry
//! after every `chunk_ratio` payload entries (chunk_ratio = 2^23 × logical sector / block size).
//!
//! ```text
//! entry: bits 0..2 state | bits 3..19 reserved | bits 20..63 file offset in MiB
//! payload states: 0 not present, 1 undefined, 2 zero, 3 unmapped, 6 fully present,
//!                 7 partially present (differencing: see the sector bitmap)
//! sector bitmap states: 0 not present, 6 present (1 MiB: one bit per logical sector of the chunk)
//! ```
use super::metadata::Metadata;
use super::MIB;
use qimg_core::{Error, Result};

/// Payload block not present (unallocated).
pub const NOT_PRESENT: u64 = 0;
/// Payload block undefined.
pub const UNDEFINED: u64 = 1;
/// Payload block reads as zeros.
pub const ZERO: u64 = 2;
/// Payload block unmapped (trimmed).
pub const UNMAPPED: u64 = 3;
/// Payload block fully present at its offset.
pub const FULLY_PRESENT: u64 = 6;
/// Payload block partially present (differencing images).
pub const PARTIALLY_PRESENT: u64 = 7;
/// Sector bitmap block present.
pub const SB_PRESENT: u64 = 6;
/// State bits.
pub const STATE_MASK: u64 = 7;
/// File offset bits.
pub const OFFSET_MASK: u64 = !0xfffff;

/// How a guest run is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In this file at the host offset.
    Present(u64),
    /// Reads as zeros here.
    Zero,
    /// Not in this file: the parent (differencing) or zeros.
    Absent,
    /// Partially present: block at the host offset, sector bitmap at the second offset.
    Partial(u64, u64),
}

/// A guest run within one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Guest offset.
    pub guest: u64,
    /// Length.
    pub len: u64,
    /// Where it is.
    pub kind: Kind,
}

/// The in-memory BAT with its geometry.
#[derive(Debug, Clone)]
pub struct Bat {
    /// Raw entries.
    pub entries: Vec<u64>,
    /// Block size in bytes.
    pub block_size: u64,
    /// Payload entries per sector-bitmap entry.
    pub chunk_ratio: u64,
    /// Virtual disk size.
    pub disk_size: u64,
    /// Logical sector size.
    pub sector: u64,
    /// Differencing image.
    pub has_parent: bool,
}

/// Number of payload blocks and BAT entries for `m`, as QEMU computes them.
pub fn geometry(m: &Metadata) -> (u64, u64) {
    let bs = m.block_size as u64;
    let data_blocks = m.disk_size.div_ceil(bs);
    let cr = m.chunk_ratio();
    let entries = if data_blocks == 0 {
        0
    } else if m.has_parent {
        data_blocks.div_ceil(cr) * (cr + 1)
    } else {
        data_blocks + (data_blocks - 1) / cr
    };
    (data_blocks, entries)
}

impl Bat {
    /// Decode the BAT region bytes for `m`; the region must hold every entry.
    pub fn decode(bytes: &[u8], m: &Metadata) -> Result<Bat> {
        let (_, n) = geometry(m);
        if n * 8 > bytes.len() as u64 {
            return Err(Error::corrupt(format!(
                "VHDX BAT region ({} bytes) is too small for {n} entries",
                bytes.len()
            )));
        }
        let entries = bytes[..(n * 8) as usize]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Bat {
            entries,
            block_size: m.block_size as u64,
            chunk_ratio: m.chunk_ratio(),
            disk_size: m.disk_size,
            sector: m.logical_sector as u64,
            has_parent: m.has_parent,
        })
    }

    /// The BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }

    /// The BAT index of the sector bitmap of chunk `chunk`.
    pub fn bitmap_index(&self, chunk: u64) -> usize {
        (chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize
    }

    /// True if BAT index `i` is a sector bitmap entry.
    pub fn is_bitmap_index(&self, i: usize) -> bool {
        (i as u64 + 1).is_multiple_of(self.chunk_ratio + 1)
    }

    /// Payload blocks covering the disk.
    pub fn data_blocks(&self) -> u64 {
        self.disk_size.div_ceil(self.block_size)
    }

    /// Classify a payload entry.
    pub fn kind(&self, block: u64) -> Result<Kind> {
        let e = self.entries[self.payload_index(block)];
        let off = e & OFFSET_MASK;
        match e & STATE_MASK {
            FULLY_PRESENT => Ok(Kind::Present(off)),
            ZERO if !self.has_parent => Ok(Kind::Zero),
            // A zero block in a differencing image reads zeros too (not the parent).
            ZERO => Ok(Kind::Zero),
            NOT_PRESENT | UNDEFINED | UNMAPPED => Ok(Kind::Absent),
            PARTIALLY_PRESENT if self.has_parent => {
                let sb = self.entries[self.bitmap_index(block / self.chunk_ratio)];
                if sb & STATE_MASK != SB_PRESENT {
                    return Err(Error::corrupt(format!(
                        "VHDX block {block} is partially present but its sector bitmap is not"
                    )));
                }
                Ok(Kind::Partial(off, sb & OFFSET_MASK))
            }
            s => Err(Error::corrupt(format!(
                "VHDX BAT entry for block {block} has invalid state {s}"
            ))),
        }
    }

    /// Split `[offset, offset+len)` into per-block runs, merging neighbours of the same kind.
    pub fn runs(&self, offset: u64, len: u64) -> Result<Vec<Run>> {
        let bs = self.block_size;
        let mut out: Vec<Run> = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let block = pos / bs;
            let in_block = pos % bs;
            let take = (bs - in_block).min(end - pos);
            let kind = match self.kind(block)? {
                Kind::Present(h) => Kind::Present(h + in_block),
                k => k,
            };
            if let Some(last) = out.last_mut() {
                let merge = match (last.kind, kind) {
                    (Kind::Present(a), Kind::Present(b)) => a + last.len == b,
                    (Kind::Zero, Kind::Zero) | (Kind::Absent, Kind::Absent) => true,
                    _ => false,
                };
                if merge {
                    last.len += take;
                    pos += take;
                    continue;
                }
            }
            out.push(Run {
                guest: pos,
                len: take,
                kind,
            });
            pos += take;
        }
        Ok(out)
    }

    /// Every host range BAT entries point at: (start, length, BAT index), for overlap checks; a
    /// payload block's length stops at the end of the disk.
    pub fn host_ranges(&self) -> Vec<(u64, u64, usize)> {
        let mut v = Vec::new();
        for (i, &e) in self.entries.iter().enumerate() {
            let st = e & STATE_MASK;
            if self.is_bitmap_index(i) {
                if st == SB_PRESENT {
                    v.push((e & OFFSET_MASK, MIB, i));
                }
            } else if st == FULLY_PRESENT || st == PARTIALLY_PRESENT {
                // The last block only needs the part inside the disk (QEMU's check, too).
                let block = i as u64 - i as u64 / (self.chunk_ratio + 1);
                let len = self
                    .block_size
                    .min(self.disk_size.saturating_sub(block * self.block_size))
                    .max(1);
                v.push((e & OFFSET_MASK, len, i));
            }
        }
        v
    }

    /// Set payload entry of `block`.
    pub fn set(&mut self, block: u64, host: u64, state: u64) -> usize {
        let i = self.payload_index(block);
        self.entries[i] = (host & OFFSET_MASK) | state;
        i
    }
}
