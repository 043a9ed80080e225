//! The Bochs redolog header ("growing" images, as bximage writes them) and its bounds.
//!
//! ```text
//! Bytes (integers little-endian):
//!    0 -  31: magic    "Bochs Virtual HD Image", NUL-padded
//!   32 -  47: type     "Redolog"
//!   48 -  63: subtype  "Growing" (also "Undoable", "Volatile": refused)
//!   64 -  67: version  0x00010000 (v1) or 0x00020000 (v2)
//!   68 -  71: header   header size in bytes (512); the catalog starts here
//!   72 -  75: catalog  catalog entries (one u32 per extent; 0xffffffff = not allocated)
//!   76 -  79: bitmap   bytes of the allocation bitmap in front of each extent (1 bit per sector)
//!   80 -  83: extent   extent size in bytes
//!   v2: 84 - 87 timestamp, 88 - 95 disk size in bytes; v1: 84 - 91 disk size in bytes
//! ```
//! Data starts right after the catalog; allocated extent `n` is stored at
//! `data + n * (bitmap blocks + extent blocks) * 512`, its bitmap first.
use crate::bytes::{le32, le64};
use qimg_core::{Error, ErrorCode, Result};

/// Bytes of the header read.
pub const HEADER_SIZE: usize = 512;
/// Magic string.
pub const MAGIC: &[u8] = b"Bochs Virtual HD Image";
/// Redolog type.
pub const REDOLOG: &[u8] = b"Redolog";
/// The only subtype QEMU (and qimg) reads.
pub const GROWING: &[u8] = b"Growing";
/// Header version 1.
pub const VERSION_V1: u32 = 0x0001_0000;
/// Header version 2.
pub const VERSION_V2: u32 = 0x0002_0000;
/// Catalog bound (QEMU: 1M entries, enough for bximage's largest image).
pub const MAX_CATALOG: u32 = 0x10_0000;
/// Extent size bound (QEMU: 8 MiB).
pub const MAX_EXTENT: u32 = 0x80_0000;
/// Bitmap size bound per extent (qimg: 1 MiB; an 8 MiB extent needs 2 KiB).
pub const MAX_BITMAP: u32 = 1 << 20;
/// Sector size.
pub const SECTOR: u64 = 512;
/// First u32 (little-endian) of bximage's "sparse" images, another format QEMU does not read.
pub const SPARSE_MAGIC: u32 = 0x0246_8ace;

/// The decoded, bounded header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Header version.
    pub version: u32,
    /// Catalog offset (the header size field).
    pub header_size: u32,
    /// Catalog entries.
    pub catalog: u32,
    /// Bitmap bytes per extent.
    pub bitmap: u32,
    /// Extent size in bytes.
    pub extent: u32,
    /// Virtual size in bytes (a multiple of 512).
    pub disk: u64,
}

/// The NUL-terminated string at the start of `b`.
fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// True if `b` starts a growing Bochs image (QEMU's probe).
pub fn is_growing(b: &[u8]) -> bool {
    b.len() >= 68
        && cstr(&b[..32]) == MAGIC
        && cstr(&b[32..48]) == REDOLOG
        && cstr(&b[48..64]) == GROWING
        && matches!(le32(b, 64), VERSION_V1 | VERSION_V2)
}

impl Header {
    /// Sectors of one bitmap.
    pub fn bitmap_blocks(&self) -> u64 {
        u64::from(self.bitmap).div_ceil(SECTOR)
    }

    /// Sectors of one extent.
    pub fn extent_blocks(&self) -> u64 {
        u64::from(self.extent).div_ceil(SECTOR)
    }

    /// Byte offset where the data (first extent's bitmap) starts.
    pub fn data_offset(&self) -> u64 {
        u64::from(self.header_size) + 4 * u64::from(self.catalog)
    }

    /// Decode and bound the first 512 bytes of a file of `file_size` bytes.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Header> {
        if b.len() >= 4 && le32(b, 0) == SPARSE_MAGIC {
            return Err(Error::unsupported(
                "bochs: bximage 'sparse' images are not supported (only 'growing' redologs)",
            ));
        }
        if b.len() < HEADER_SIZE
            || cstr(&b[..32]) != MAGIC
            || cstr(&b[32..48]) != REDOLOG
            || !matches!(le32(b, 64), VERSION_V1 | VERSION_V2)
        {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in Bochs format",
            ));
        }
        let sub = cstr(&b[48..64]);
        if sub != GROWING {
            return Err(Error::unsupported(format!(
                "bochs: '{}' redolog images are not supported (only 'Growing', as bximage \
                 -imgmode=growing writes them)",
                String::from_utf8_lossy(sub)
            )));
        }
        let version = le32(b, 64);
        let disk = if version == VERSION_V1 {
            le64(b, 84)
        } else {
            le64(b, 88)
        };
        let h = Header {
            version,
            header_size: le32(b, 68),
            catalog: le32(b, 72),
            bitmap: le32(b, 76),
            extent: le32(b, 80),
            disk: disk / SECTOR * SECTOR,
        };
        if h.catalog > MAX_CATALOG {
            return Err(Error::corrupt("Catalog size is too large"));
        }
        if h.extent < 512 {
            return Err(Error::corrupt("Extent size must be at least 512"));
        }
        if !h.extent.is_power_of_two() {
            return Err(Error::corrupt(format!(
                "Extent size {} is not a power of two",
                h.extent
            )));
        }
        if h.extent > MAX_EXTENT {
            return Err(Error::corrupt(format!(
                "Extent size {} is too large",
                h.extent
            )));
        }
        if h.bitmap == 0 || h.bitmap > MAX_BITMAP || u64::from(h.bitmap) * 8 < h.extent_blocks() {
            return Err(Error::corrupt(format!(
                "Bitmap size {} does not fit extents of {} bytes",
                h.bitmap, h.extent
            )));
        }
        if (h.header_size as usize) < HEADER_SIZE || h.data_offset() > file_size {
            return Err(Error::corrupt(format!(
                "Header size {} and catalog of {} entries do not fit the file",
                h.header_size, h.catalog
            )));
        }
        if u64::from(h.catalog) < h.disk.div_ceil(u64::from(h.extent)) {
            return Err(Error::corrupt(
                "Catalog size is too small for this disk size",
            ));
        }
        Ok(h)
    }
}
