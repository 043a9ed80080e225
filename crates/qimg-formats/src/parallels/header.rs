//! The Parallels header and its bounds (QEMU's docs/interop/parallels.txt).
//!
//! ```text
//! Bytes (all little-endian):
//!    0 - 15: magic        "WithoutFreeSpace" (v1) or "WithouFreSpacExt" (v2, "ext")
//!   16 - 19: version      must be 2
//!   20 - 23: heads        guest geometry
//!   24 - 27: cylinders    guest geometry
//!   28 - 31: tracks       cluster size in sectors
//!   32 - 35: nb_bat_entries  BAT entries (disk size in clusters)
//!   36 - 43: nb_sectors   disk size in sectors (v1: low 32 bits only)
//!   44 - 47: in_use       0x746F6E59 while opened read-write, 0 or 0x312e3276 when closed
//!   48 - 51: data_off     first data sector (v1: 0 = right after the BAT)
//!   52 - 55: flags        bit 0: empty image
//!   56 - 63: ext_off      format extension cluster, in sectors (0 = none)
//! ```
//! The BAT (one u32 per cluster) follows at byte 64: 0 = unallocated, otherwise the host offset in
//! sectors (v1) or in clusters (v2).
use crate::bytes::{le32, le64};
use qimg_core::{Error, ErrorCode, Result};

/// Header size in bytes; the BAT starts here.
pub const HEADER_SIZE: u64 = 64;
/// Magic of v1 images (BAT entries in sectors).
pub const MAGIC_V1: &[u8; 16] = b"WithoutFreeSpace";
/// Magic of v2 images (BAT entries in clusters).
pub const MAGIC_V2: &[u8; 16] = b"WithouFreSpacExt";
/// The only header version.
pub const VERSION: u32 = 2;
/// `in_use` while an application has the image open read-write.
pub const IN_USE: u32 = 0x746F_6E59;
/// `in_use` of a cleanly closed image (Parallels' own tools write it; QEMU writes 0).
pub const CLOSED: u32 = 0x312e_3276;
/// Sector size.
pub const SECTOR: u64 = 512;
/// Largest cluster accepted: 64 MiB (QEMU bounds `tracks` only by INT32_MAX / 513 sectors).
pub const MAX_CLUSTER: u64 = 64 << 20;
/// Largest BAT accepted: 2^28 entries (1 GiB of table), as QEMU's `INT_MAX / 4`-ish bound.
pub const MAX_BAT_ENTRIES: u32 = 1 << 28;

/// The decoded, bounded header.
#[derive(Debug, Clone)]
pub struct Header {
    /// True for "WithouFreSpacExt" (BAT entries count clusters).
    pub ext: bool,
    /// Geometry: heads.
    pub heads: u32,
    /// Geometry: cylinders.
    pub cylinders: u32,
    /// Cluster size in sectors.
    pub tracks: u32,
    /// BAT entries.
    pub bat_entries: u32,
    /// Virtual size in sectors.
    pub nb_sectors: u64,
    /// The in-use marker.
    pub in_use: u32,
    /// First data sector (computed for v1 images that store 0).
    pub data_off: u32,
    /// Flags.
    pub flags: u32,
    /// Format extension offset in sectors.
    pub ext_off: u64,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        u64::from(self.tracks) * SECTOR
    }

    /// Bytes one BAT entry unit stands for (a sector in v1, a cluster in v2).
    pub fn off_multiplier(&self) -> u64 {
        if self.ext {
            self.cluster_size()
        } else {
            SECTOR
        }
    }

    /// Byte offset where the BAT ends.
    pub fn bat_end(&self) -> u64 {
        HEADER_SIZE + 4 * u64::from(self.bat_entries)
    }

    /// Decode and bound a header read from the first 64 bytes of a file of `file_size` bytes.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Header> {
        if b.len() < HEADER_SIZE as usize {
            return Err(wrong_format("Image not in Parallels format"));
        }
        let ext = match &b[..16] {
            m if m == MAGIC_V2 => true,
            m if m == MAGIC_V1 => false,
            _ => return Err(wrong_format("Image not in Parallels format")),
        };
        if le32(b, 16) != VERSION {
            return Err(wrong_format("Image not in Parallels format"));
        }
        let tracks = le32(b, 28);
        if tracks == 0 {
            return Err(Error::corrupt("Invalid image: Zero sectors per track"));
        }
        if u64::from(tracks) * SECTOR > MAX_CLUSTER {
            return Err(Error::corrupt("Invalid image: Too big cluster"));
        }
        let bat_entries = le32(b, 32);
        if bat_entries > MAX_BAT_ENTRIES {
            return Err(Error::corrupt("Catalog too large"));
        }
        let raw_sectors = le64(b, 36);
        let nb_sectors = if ext {
            raw_sectors
        } else {
            raw_sectors & 0xffff_ffff
        };
        let cap = u64::from(bat_entries) * u64::from(tracks);
        if nb_sectors > cap {
            return Err(Error::corrupt(format!(
                "Invalid image: {nb_sectors} sectors do not fit in {bat_entries} clusters"
            )));
        }
        let mut h = Header {
            ext,
            heads: le32(b, 20),
            cylinders: le32(b, 24),
            tracks,
            bat_entries,
            nb_sectors,
            in_use: le32(b, 44),
            data_off: le32(b, 48),
            flags: le32(b, 52),
            ext_off: le64(b, 56),
        };
        if h.bat_end() > file_size {
            return Err(Error::corrupt(format!(
                "Invalid image: the BAT ({} bytes) is larger than the file ({file_size} bytes)",
                4 * u64::from(bat_entries)
            )));
        }
        let min_data = h.bat_end().div_ceil(SECTOR);
        if h.data_off == 0 {
            if ext {
                return Err(Error::corrupt("Invalid image: data_off is zero"));
            }
            h.data_off = min_data as u32;
        } else if u64::from(h.data_off) < min_data {
            return Err(Error::corrupt(format!(
                "Invalid image: data_off {} overlaps the BAT",
                h.data_off
            )));
        }
        if h.in_use != 0 && h.in_use != IN_USE && h.in_use != CLOSED {
            return Err(Error::corrupt(format!(
                "Invalid image: in_use field {:#x}",
                h.in_use
            )));
        }
        Ok(h)
    }

    /// Encode the header (64 bytes).
    pub fn encode(&self) -> [u8; HEADER_SIZE as usize] {
        let mut b = [0u8; HEADER_SIZE as usize];
        b[..16].copy_from_slice(if self.ext { MAGIC_V2 } else { MAGIC_V1 });
        b[16..20].copy_from_slice(&VERSION.to_le_bytes());
        b[20..24].copy_from_slice(&self.heads.to_le_bytes());
        b[24..28].copy_from_slice(&self.cylinders.to_le_bytes());
        b[28..32].copy_from_slice(&self.tracks.to_le_bytes());
        b[32..36].copy_from_slice(&self.bat_entries.to_le_bytes());
        b[36..44].copy_from_slice(&self.nb_sectors.to_le_bytes());
        b[44..48].copy_from_slice(&self.in_use.to_le_bytes());
        b[48..52].copy_from_slice(&self.data_off.to_le_bytes());
        b[52..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..64].copy_from_slice(&self.ext_off.to_le_bytes());
        b
    }
}

/// "Not this format" (`ERR_QIMG_WRONG_FORMAT`).
fn wrong_format(msg: &str) -> Error {
    Error::new(ErrorCode::WrongFormat, msg)
}
