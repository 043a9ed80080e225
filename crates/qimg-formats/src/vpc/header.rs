//! The VHD footer and dynamic-disk header (Microsoft Virtual Hard Disk, "vpc" in QEMU), their
//! checksums and bounds, and the CHS geometry rules QEMU uses for the guest size.
//!
//! Footer (big-endian), 512 bytes: at the end of every VHD, and copied at offset 0 of dynamic ones:
//!
//! ```text
//!    0  char[8]  cookie        "conectix"
//!    8  u32      features      2 (reserved bit always set)
//!   12  u32      version       0x00010000
//!   16  u64      data_offset   dynamic header offset; 0xffffffffffffffff for fixed disks
//!   24  u32      timestamp     seconds since 2000-01-01 00:00:00 UTC
//!   28  char[4]  creator_app   "qemu", "qem2", "vpc ", "win ", "d2v ", …
//!   32  u16 major, 34 u16 minor (creator version)
//!   36  char[4]  creator_os    "Wi2k"
//!   40  u64      orig_size
//!   48  u64      current_size
//!   56  u16      cylinders, 58 u8 heads, 59 u8 sectors per track
//!   60  u32      disk_type     2 fixed, 3 dynamic, 4 differencing
//!   64  u32      checksum      one's complement of the byte sum, this field taken as 0
//!   68  u8[16]   uuid
//!   84  u8       saved_state
//! ```
//!
//! Dynamic-disk header (big-endian), 1024 bytes at the footer's `data_offset`:
//!
//! ```text
//!    0  char[8]  cookie             "cxsparse"
//!    8  u64      data_offset        0xffffffffffffffff
//!   16  u64      table_offset       BAT offset
//!   24  u32      version            0x00010000
//!   28  u32      max_table_entries  BAT entries
//!   32  u32      block_size         2 MiB by default; a power of two
//!   36  u32      checksum           over the 1024 bytes, this field taken as 0
//!   40  u8[16]   parent_uuid, 56 u32 parent_timestamp, 64 u16be[256] parent_name,
//!  576  parent_locator[8] (24 bytes each)
//! ```
//!
//! The BAT holds big-endian u32 sector numbers of each block's sector bitmap (`0xffffffff`:
//! unallocated); the block's data follows its bitmap (`block_size / 512` bits, padded to a sector).
use qimg_core::{Error, ErrorCode, Result};

/// Footer size.
pub const FOOTER_SIZE: usize = 512;
/// Dynamic header size.
pub const DYN_HEADER_SIZE: usize = 1024;
/// Footer cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Dynamic header cookie.
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";
/// Disk type: fixed.
pub const TYPE_FIXED: u32 = 2;
/// Disk type: dynamic.
pub const TYPE_DYNAMIC: u32 = 3;
/// Disk type: differencing.
pub const TYPE_DIFFERENCING: u32 = 4;
/// Unallocated BAT entry.
pub const BAT_UNALLOCATED: u32 = 0xffff_ffff;
/// QEMU's default (and only created) block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
/// Largest guest size in sectors (2040 GiB), QEMU's `VHD_MAX_SECTORS`.
pub const MAX_SECTORS: u64 = 0xff00_0000;
/// The largest CHS geometry, 65535 × 16 × 255 sectors, QEMU's `VHD_MAX_GEOMETRY`.
pub const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// Seconds from the Unix epoch to 2000-01-01, the VHD timestamp base.
pub const TIMESTAMP_BASE: u64 = 946_684_800;

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// VHD checksum: the one's complement of the sum of all bytes, the 4 bytes at `field` taken as 0.
pub fn checksum(buf: &[u8], field: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(b as u32));
    !sum
}

/// A parsed footer; `raw` is kept so it can be rewritten unchanged at the new end of file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// The 512 bytes as read (checksum verified).
    pub raw: [u8; FOOTER_SIZE],
    /// `data_offset`.
    pub data_offset: u64,
    /// `creator_app`.
    pub creator_app: [u8; 4],
    /// `current_size`.
    pub current_size: u64,
    /// `cylinders`.
    pub cyls: u16,
    /// `heads`.
    pub heads: u8,
    /// `sectors per track`.
    pub secs: u8,
    /// `disk_type`.
    pub disk_type: u32,
}

impl Footer {
    /// True if `b` starts with the footer cookie.
    pub fn has_cookie(b: &[u8]) -> bool {
        b.len() >= 8 && &b[..8] == COOKIE
    }

    /// Parse a footer whose cookie was found; the checksum must match (QEMU: "Incorrect header
    /// checksum").
    pub fn parse(raw: &[u8; FOOTER_SIZE]) -> Result<Self> {
        let stored = be32(raw, 64);
        if checksum(raw, 64) != stored {
            return Err(Error::corrupt("Incorrect header checksum"));
        }
        Ok(Footer {
            raw: *raw,
            data_offset: be64(raw, 16),
            creator_app: raw[28..32].try_into().expect("4 bytes"),
            current_size: be64(raw, 48),
            cyls: u16::from_be_bytes([raw[56], raw[57]]),
            heads: raw[58],
            secs: raw[59],
            disk_type: be32(raw, 60),
        })
    }

    /// Sectors of the CHS geometry.
    pub fn chs_sectors(&self) -> u64 {
        self.cyls as u64 * self.heads as u64 * self.secs as u64
    }

    /// The guest size QEMU 10 derives: the CHS geometry for images made by Virtual PC ("vpc ")
    /// and by QEMU without force_size ("qemu"), `current_size` for every other creator (Hyper-V
    /// "win ", "qem2", Disk2vhd, bximage "bxic", …) and whenever the geometry is the largest
    /// (sizes beyond CHS). Bounded by 2040 GiB ("File too large").
    pub fn guest_size(&self) -> Result<u64> {
        let current = !matches!(&self.creator_app, b"vpc " | b"qemu");
        let chs = self.chs_sectors();
        let sectors = if current || chs == MAX_GEOMETRY {
            self.current_size / 512
        } else {
            chs
        };
        if sectors > MAX_SECTORS {
            return Err(Error::new(ErrorCode::OutOfRange, "File too large"));
        }
        Ok(sectors * 512)
    }

    /// A new footer as QEMU writes it. `force_size` marks the creator "qem2" so the size is
    /// taken from `current_size` on open.
    pub fn new(size: u64, geometry: (u16, u8, u8), disk_type: u32, force_size: bool) -> Self {
        let mut b = [0u8; FOOTER_SIZE];
        b[..8].copy_from_slice(COOKIE);
        b[8..12].copy_from_slice(&2u32.to_be_bytes());
        b[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        let data_offset = if disk_type == TYPE_FIXED {
            u64::MAX
        } else {
            FOOTER_SIZE as u64
        };
        b[16..24].copy_from_slice(&data_offset.to_be_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(TIMESTAMP_BASE);
        b[24..28].copy_from_slice(&(now.saturating_sub(TIMESTAMP_BASE) as u32).to_be_bytes());
        b[28..32].copy_from_slice(if force_size { b"qem2" } else { b"qemu" });
        b[32..34].copy_from_slice(&5u16.to_be_bytes());
        b[34..36].copy_from_slice(&3u16.to_be_bytes());
        b[36..40].copy_from_slice(b"Wi2k");
        b[40..48].copy_from_slice(&size.to_be_bytes());
        b[48..56].copy_from_slice(&size.to_be_bytes());
        b[56..58].copy_from_slice(&geometry.0.to_be_bytes());
        b[58] = geometry.1;
        b[59] = geometry.2;
        b[60..64].copy_from_slice(&disk_type.to_be_bytes());
        b[68..84].copy_from_slice(&crate::uuid::random_v4());
        let sum = checksum(&b, 64);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        Footer::parse(&b).expect("a footer we just summed")
    }
}

/// The dynamic-disk header fields qimg uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    /// `table_offset`.
    pub table_offset: u64,
    /// `max_table_entries`.
    pub max_table_entries: u32,
    /// `block_size`.
    pub block_size: u32,
}

impl DynHeader {
    /// Parse and bound-check the dynamic header for a disk of `guest_size` bytes in a file of
    /// `file_size` bytes, with QEMU's messages (plus a checksum check and a BAT-inside-the-file
    /// bound, so a hostile entry count cannot make qimg allocate more than the file holds).
    pub fn parse(raw: &[u8; DYN_HEADER_SIZE], guest_size: u64, file_size: u64) -> Result<Self> {
        if &raw[..8] != DYN_COOKIE {
            return Err(Error::corrupt(
                "Invalid dynamic VHD header (no cxsparse cookie)",
            ));
        }
        let h = DynHeader {
            table_offset: be64(raw, 16),
            max_table_entries: be32(raw, 28),
            block_size: be32(raw, 32),
        };
        if !h.block_size.is_power_of_two() || h.block_size < 512 {
            return Err(Error::corrupt(format!(
                "Invalid block size {}",
                h.block_size
            )));
        }
        if guest_size / h.block_size as u64 > u32::MAX as u64 {
            return Err(Error::corrupt("Too many blocks"));
        }
        if (h.max_table_entries as u64) * (h.block_size as u64) < guest_size {
            return Err(Error::corrupt("Page table too small"));
        }
        if h.max_table_entries > i32::MAX as u32 / 4 {
            return Err(Error::corrupt(format!(
                "Max Table Entries too large ({})",
                h.max_table_entries
            )));
        }
        // Beyond QEMU, which does not verify it: the dynamic header's checksum (after QEMU's own
        // checks, so QEMU's limits keep QEMU's messages).
        if checksum(raw, 36) != be32(raw, 36) {
            return Err(Error::corrupt("Incorrect dynamic header checksum"));
        }
        let bat_end = h
            .table_offset
            .checked_add(h.max_table_entries as u64 * 4)
            .filter(|&e| e <= file_size);
        if bat_end.is_none() {
            return Err(Error::corrupt(format!(
                "VHD block allocation table (offset {}, {} entries) lies outside the image file",
                h.table_offset, h.max_table_entries
            )));
        }
        Ok(h)
    }

    /// A new dynamic header as QEMU writes it (BAT right after it, at offset 1536).
    pub fn encode_new(max_table_entries: u32, block_size: u32) -> [u8; DYN_HEADER_SIZE] {
        let mut b = [0u8; DYN_HEADER_SIZE];
        b[..8].copy_from_slice(DYN_COOKIE);
        b[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        b[16..24].copy_from_slice(&(3 * 512u64).to_be_bytes());
        b[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        b[28..32].copy_from_slice(&max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&block_size.to_be_bytes());
        let sum = checksum(&b, 36);
        b[36..40].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Bytes of each block's sector bitmap (one bit per sector, padded to a sector).
    pub fn bitmap_size(&self) -> u64 {
        (self.block_size as u64 / (8 * 512)).next_multiple_of(512)
    }
}

/// The VHD specification's CHS geometry for `total_sectors` (as QEMU's `calculate_geometry`):
/// may round down; callers search upwards for one that covers the size.
pub fn calculate_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_GEOMETRY);
    let (mut secs, mut heads, mut cth): (u64, u64, u64);
    if total >= 65535 * 16 * 63 {
        secs = 255;
        heads = 16;
        cth = total / secs;
    } else {
        secs = 17;
        cth = total / secs;
        heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            secs = 31;
            heads = 16;
            cth = total / secs;
        }
        if cth >= heads * 1024 {
            secs = 63;
            heads = 16;
            cth = total / secs;
        }
    }
    ((cth / heads) as u16, heads as u8, secs as u8)
}

/// The geometry and guest size QEMU's `qemu-img create -f vpc` picks for `size` bytes: the
/// smallest CHS geometry covering the size (rounding up), or — with `force_size`, or when no
/// geometry fits — the largest geometry and the size itself (rounded up to a sector). Sizes
/// over 2040 GiB are refused.
pub fn create_geometry(size: u64, force_size: bool) -> Result<((u16, u8, u8), u64)> {
    let too_large = || Error::invalid("The image size is too large for file format 'vpc'");
    // qemu-img rounds every size up to a sector first.
    let size = size.checked_next_multiple_of(512).ok_or_else(too_large)?;
    if size / 512 > MAX_SECTORS {
        return Err(too_large());
    }
    let mut g = (0u16, 0u8, 0u8);
    if force_size {
        g = (65535, 16, 255);
    } else {
        let total = (size / 512).min(MAX_GEOMETRY);
        let mut i = 0;
        while total > g.0 as u64 * g.1 as u64 * g.2 as u64 {
            g = calculate_geometry(total + i);
            i += 1;
        }
    }
    let chs = g.0 as u64 * g.1 as u64 * g.2 as u64;
    let sectors = if chs == MAX_GEOMETRY { size / 512 } else { chs };
    Ok((g, sectors * 512))
}
