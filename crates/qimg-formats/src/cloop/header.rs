//! The cloop V2.0 header and offset table, bounded as QEMU bounds them (or tighter).
//!
//! ```text
//!   0 - 127: a shell-script preamble starting "#!/bin/sh\n#V2.0 Format\n…"
//! 128 - 131: block_size   (big-endian) uncompressed bytes per block, a multiple of 512
//! 132 - 135: n_blocks     (big-endian)
//! 136 - …  : offsets      n_blocks + 1 big-endian u64: block i is the zlib stream stored in
//!                         [offsets[i], offsets[i+1])
//! ```
use crate::bytes::{be32, be64};
use qimg_core::{Error, ErrorCode, Result};

/// The preamble QEMU matches (its probe compares these bytes).
pub const MAGIC_V2: &[u8] =
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
/// Bytes before the block size field.
pub const PREAMBLE: u64 = 128;
/// Largest block (QEMU's `MAX_BLOCK_SIZE`: 64 MiB).
pub const MAX_BLOCK: u32 = 64 << 20;
/// Largest offset table (QEMU: 512 MiB).
pub const MAX_OFFSETS_BYTES: u64 = 512 << 20;

/// Block size and count, bounded.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Uncompressed bytes per block.
    pub block_size: u32,
    /// Number of blocks.
    pub n_blocks: u32,
}

impl Header {
    /// Decode and bound the fields at byte 128 (`b` is the first 136 bytes) for a file of
    /// `file_size` bytes.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Header> {
        if b.len() < 136 || !b.starts_with(b"#!/bin/sh\n#V2.0 Format\n") {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in cloop V2.0 format",
            ));
        }
        let block_size = be32(b, 128);
        if block_size == 0 || !block_size.is_multiple_of(512) {
            return Err(Error::corrupt(format!(
                "block_size {block_size} must be a multiple of 512"
            )));
        }
        if block_size > MAX_BLOCK {
            return Err(Error::corrupt(format!(
                "block_size {block_size} must be {} MB or less",
                MAX_BLOCK >> 20
            )));
        }
        let n_blocks = be32(b, 132);
        let table = (u64::from(n_blocks) + 1) * 8;
        if table > MAX_OFFSETS_BYTES {
            return Err(Error::corrupt(
                "image requires too many offsets, try increasing block size",
            ));
        }
        if PREAMBLE + 8 + table > file_size {
            return Err(Error::corrupt(format!(
                "offset table of {n_blocks} blocks is larger than the file"
            )));
        }
        Ok(Header {
            block_size,
            n_blocks,
        })
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        u64::from(self.n_blocks) * u64::from(self.block_size)
    }
}

/// Decode the offset table and check it: monotonic, inside the file, no compressed block larger
/// than twice the block size (QEMU's bound, which also keeps a block's buffer small).
pub fn parse_offsets(raw: &[u8], h: &Header, file_size: u64) -> Result<Vec<u64>> {
    let n = h.n_blocks as usize + 1;
    let offs: Vec<u64> = (0..n).map(|i| be64(raw, 8 * i)).collect();
    let table_end = PREAMBLE + 8 + 8 * n as u64;
    if offs[0] < table_end {
        return Err(Error::corrupt(format!(
            "Offset of block 0 ({}) lies inside the header, image file is corrupt",
            offs[0]
        )));
    }
    let max = 2 * u64::from(h.block_size) + 512;
    for i in 1..n {
        if offs[i] < offs[i - 1] {
            return Err(Error::corrupt(format!(
                "Offsets not monotonically increasing at index {i}, image file is corrupt"
            )));
        }
        if offs[i] - offs[i - 1] > max {
            return Err(Error::corrupt(format!(
                "invalid compressed block size at index {i}, image file is corrupt"
            )));
        }
    }
    if offs[n - 1] > file_size {
        return Err(Error::corrupt(format!(
            "Offsets point past the end of the file ({} > {file_size}), image file is corrupt",
            offs[n - 1]
        )));
    }
    Ok(offs)
}
