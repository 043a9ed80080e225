//! The VDI header (VirtualBox Disk Image, version 1.1) and its bounds, as QEMU's `vdi` driver
//! accepts them.
//!
//! On-disk layout (little-endian), 512 bytes at offset 0:
//!
//! ```text
//!   0x000  char[64]  text            "<<< QEMU VM Virtual Disk Image >>>\n" (any text)
//!   0x040  u32       signature       0xbeda107f
//!   0x044  u32       version         0x00010001 (1.1)
//!   0x048  u32       header_size     0x180
//!   0x04c  u32       image_type      1 dynamic, 2 static
//!   0x050  u32       image_flags
//!   0x054  char[256] description
//!   0x154  u32       offset_bmap     block map offset (sector aligned)
//!   0x158  u32       offset_data     data offset (sector aligned)
//!   0x15c  u32       cylinders, 0x160 heads, 0x164 sectors (legacy geometry)
//!   0x168  u32       sector_size     512
//!   0x16c  u32       unused
//!   0x170  u64       disk_size       guest bytes
//!   0x178  u32       block_size      1 MiB
//!   0x17c  u32       block_extra
//!   0x180  u32       blocks_in_image block map entries
//!   0x184  u32       blocks_allocated
//!   0x188  uuid      uuid_image, 0x198 uuid_last_snap, 0x1a8 uuid_link, 0x1b8 uuid_parent
//!   0x1c8  u64[7]    unused
//! ```
//!
//! The block map is `blocks_in_image` little-endian u32 entries: a block index into the data area
//! (block `n` lives at `offset_data + n * block_size`), `0xffffffff` unallocated, `0xfffffffe`
//! discarded (both read as zeros).
use qimg_core::{Error, ErrorCode, Result};

/// Header size on disk (one sector).
pub const HEADER_SIZE: usize = 512;
/// The header signature.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Version 1.1, the only one QEMU reads.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// The text QEMU writes at the start.
pub const TEXT: &[u8] = b"<<< QEMU VM Virtual Disk Image >>>\n";
/// Sector size: the only one accepted.
pub const SECTOR: u64 = 512;
/// Block size: the only one accepted (QEMU's default cluster size for VDI).
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Block map entry of an unallocated block.
pub const UNALLOCATED: u32 = 0xffff_ffff;
/// Block map entry of a discarded block (reads as zeros).
pub const DISCARDED: u32 = 0xffff_fffe;
/// Most block map entries QEMU accepts (the map must stay addressable with 32-bit sizes).
pub const BLOCKS_IN_IMAGE_MAX: u32 = u32::MAX / 4;
/// Largest guest size QEMU accepts.
pub const DISK_SIZE_MAX: u64 = BLOCKS_IN_IMAGE_MAX as u64 * BLOCK_SIZE as u64;
/// Image type of a dynamic (growing) image.
pub const TYPE_DYNAMIC: u32 = 1;
/// Image type of a static (preallocated) image.
pub const TYPE_STATIC: u32 = 2;
/// Offset of `blocks_allocated` in the header.
pub const OFF_BLOCKS_ALLOCATED: u64 = 0x184;

/// True if a block map entry points into the data area.
pub fn is_allocated(entry: u32) -> bool {
    entry < DISCARDED
}

/// A parsed VDI header; fields as on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiHeader {
    /// The whole sector as read (unknown fields are written back unchanged).
    pub raw: [u8; HEADER_SIZE],
    /// `image_type`.
    pub image_type: u32,
    /// `offset_bmap`.
    pub offset_bmap: u32,
    /// `offset_data`.
    pub offset_data: u32,
    /// `disk_size`, rounded up to a sector as QEMU does for odd sizes.
    pub disk_size: u64,
    /// `block_size`.
    pub block_size: u32,
    /// `blocks_in_image`.
    pub blocks_in_image: u32,
    /// `blocks_allocated`.
    pub blocks_allocated: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn unsupported(msg: String) -> Error {
    Error::new(ErrorCode::Unsupported, msg)
}

impl VdiHeader {
    /// Parse and bound-check a header sector, with QEMU's messages. `file_size` bounds the block
    /// map, so a hostile `blocks_in_image` cannot make qimg allocate more than the file holds.
    pub fn parse(raw: &[u8; HEADER_SIZE], file_size: u64) -> Result<Self> {
        let sig = u32_at(raw, 0x40);
        if sig != SIGNATURE {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                format!("Image not in VDI format (bad signature {sig:08x})"),
            ));
        }
        let version = u32_at(raw, 0x44);
        if version != VERSION_1_1 {
            return Err(unsupported(format!(
                "unsupported VDI image (version {}.{})",
                version >> 16,
                version & 0xffff
            )));
        }
        let h = VdiHeader {
            raw: *raw,
            image_type: u32_at(raw, 0x4c),
            offset_bmap: u32_at(raw, 0x154),
            offset_data: u32_at(raw, 0x158),
            disk_size: u64_at(raw, 0x170),
            block_size: u32_at(raw, 0x178),
            blocks_in_image: u32_at(raw, 0x180),
            blocks_allocated: u32_at(raw, 0x184),
        };
        let sector_size = u32_at(raw, 0x168);
        if !(h.offset_bmap as u64).is_multiple_of(SECTOR) {
            return Err(unsupported(format!(
                "unsupported VDI image (unaligned block map offset 0x{:x})",
                h.offset_bmap
            )));
        }
        if !(h.offset_data as u64).is_multiple_of(SECTOR) {
            return Err(unsupported(format!(
                "unsupported VDI image (unaligned data offset 0x{:x})",
                h.offset_data
            )));
        }
        if sector_size as u64 != SECTOR {
            return Err(unsupported(format!(
                "unsupported VDI image (sector size {sector_size} is not {SECTOR})"
            )));
        }
        if h.block_size != BLOCK_SIZE {
            return Err(unsupported(format!(
                "unsupported VDI image (block size {} is not {BLOCK_SIZE})",
                h.block_size
            )));
        }
        let room = h.blocks_in_image as u64 * h.block_size as u64;
        if h.disk_size > room {
            return Err(unsupported(format!(
                "unsupported VDI image (disk size {}, image bitmap has room for {room})",
                h.disk_size
            )));
        }
        if raw[0x1a8..0x1b8].iter().any(|&b| b != 0) {
            return Err(unsupported(
                "unsupported VDI image (non-NULL link UUID)".into(),
            ));
        }
        if raw[0x1b8..0x1c8].iter().any(|&b| b != 0) {
            return Err(unsupported(
                "unsupported VDI image (non-NULL parent UUID)".into(),
            ));
        }
        if h.blocks_in_image > BLOCKS_IN_IMAGE_MAX {
            return Err(unsupported(format!(
                "unsupported VDI image (too many blocks {}, max is {BLOCKS_IN_IMAGE_MAX})",
                h.blocks_in_image
            )));
        }
        // Beyond QEMU: the block map must lie in the file, and must not overlap the header.
        let bmap_end = h.offset_bmap as u64 + h.bmap_bytes();
        if (h.offset_bmap as usize) < HEADER_SIZE || bmap_end > file_size {
            return Err(Error::corrupt(format!(
                "VDI block map (offset 0x{:x}, {} entries) lies outside the image file",
                h.offset_bmap, h.blocks_in_image
            )));
        }
        if h.blocks_allocated > h.blocks_in_image {
            return Err(Error::corrupt(format!(
                "VDI header counts {} allocated blocks, more than the {} the image has",
                h.blocks_allocated, h.blocks_in_image
            )));
        }
        let mut h = h;
        h.disk_size = h.disk_size.next_multiple_of(SECTOR);
        Ok(h)
    }

    /// Bytes of the block map on disk (whole sectors).
    pub fn bmap_bytes(&self) -> u64 {
        (self.blocks_in_image as u64 * 4).next_multiple_of(SECTOR)
    }

    /// Host offset of data block `slot`.
    pub fn block_offset(&self, slot: u32) -> u64 {
        self.offset_data as u64 + slot as u64 * self.block_size as u64
    }

    /// The header sector with the current field values.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = self.raw;
        b[0x4c..0x50].copy_from_slice(&self.image_type.to_le_bytes());
        b[0x154..0x158].copy_from_slice(&self.offset_bmap.to_le_bytes());
        b[0x158..0x15c].copy_from_slice(&self.offset_data.to_le_bytes());
        b[0x170..0x178].copy_from_slice(&self.disk_size.to_le_bytes());
        b[0x178..0x17c].copy_from_slice(&self.block_size.to_le_bytes());
        b[0x180..0x184].copy_from_slice(&self.blocks_in_image.to_le_bytes());
        b[0x184..0x188].copy_from_slice(&self.blocks_allocated.to_le_bytes());
        b
    }

    /// A new header as QEMU writes it (text, signature, version 1.1, 512-byte sectors, 1 MiB
    /// blocks, fresh image and snapshot UUIDs).
    pub fn new(disk_size: u64, static_image: bool) -> Self {
        let blocks = disk_size.div_ceil(BLOCK_SIZE as u64) as u32;
        let bmap = (blocks as u64 * 4).next_multiple_of(SECTOR) as u32;
        let mut raw = [0u8; HEADER_SIZE];
        raw[..TEXT.len()].copy_from_slice(TEXT);
        raw[0x40..0x44].copy_from_slice(&SIGNATURE.to_le_bytes());
        raw[0x44..0x48].copy_from_slice(&VERSION_1_1.to_le_bytes());
        raw[0x48..0x4c].copy_from_slice(&0x180u32.to_le_bytes());
        raw[0x168..0x16c].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        raw[0x188..0x198].copy_from_slice(&crate::uuid::random_v4());
        raw[0x198..0x1a8].copy_from_slice(&crate::uuid::random_v4());
        let h = VdiHeader {
            raw,
            image_type: if static_image {
                TYPE_STATIC
            } else {
                TYPE_DYNAMIC
            },
            offset_bmap: HEADER_SIZE as u32,
            offset_data: HEADER_SIZE as u32 + bmap,
            disk_size,
            block_size: BLOCK_SIZE,
            blocks_in_image: blocks,
            blocks_allocated: if static_image { blocks } else { 0 },
        };
        let raw = h.encode();
        VdiHeader { raw, ..h }
    }
}
