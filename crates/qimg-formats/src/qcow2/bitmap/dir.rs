//! The bitmaps header extension and the bitmap directory, bounded as QEMU bounds them.
//!
//! On-disk layout (big-endian; QEMU docs/interop/qcow2.txt, "Bitmaps extension" and "Bitmap
//! directory"):
//! ```text
//! bitmaps extension (type 0x23852875, 24 bytes; valid only with autoclear bit 0 set):
//!   0 -  3  nb_bitmaps               1..=65535
//!   4 -  7  reserved                 0
//!   8 - 15  bitmap_directory_size    bytes, at most 64 MiB
//!  16 - 23  bitmap_directory_offset  cluster aligned
//! bitmap directory entry (entries are contiguous, each padded to 8 bytes):
//!   0 -  7  bitmap_table_offset      cluster aligned, not 0
//!   8 - 11  bitmap_table_size        entries, not 0
//!  12 - 15  flags                    bit 0 in_use, bit 1 auto, bit 2 extra_data_compatible;
//!                                    bits 3-31 reserved (0)
//!  16       type                     1 = dirty tracking bitmap
//!  17       granularity_bits         9..=31
//!  18 - 19  name_size                at most 1023
//!  20 - 23  extra_data_size          extra data follows; only with extra_data_compatible
//!  variable extra_data, then name (not NUL-terminated), then padding to 8 bytes
//! ```
use crate::bytes::{be32, be64};
use qimg_core::{Error, Result};

/// Most bitmaps QEMU accepts (QCOW2_MAX_BITMAPS).
pub const MAX_BITMAPS: u32 = 65535;
/// Largest bitmap directory QEMU accepts (QCOW2_MAX_BITMAP_DIRECTORY_SIZE).
pub const MAX_DIRECTORY_BYTES: u64 = 1024 * MAX_BITMAPS as u64;
/// Longest bitmap name (BME_MAX_NAME_SIZE).
pub const MAX_NAME: usize = 1023;
/// Smallest and largest granularity, as log2 of bytes per bit.
pub const GRANULARITY_BITS: std::ops::RangeInclusive<u8> = 9..=31;
/// Most bitmap table entries (BME_MAX_TABLE_SIZE).
pub const MAX_TABLE_ENTRIES: u32 = 0x0800_0000;
/// Most bytes of bitmap data one bitmap may describe (BME_MAX_PHYS_SIZE).
pub const MAX_PHYS_BYTES: u64 = 0x2000_0000;
/// Flag: the bitmap was in use when the image was last written (inconsistent if so on open).
pub const FLAG_IN_USE: u32 = 1 << 0;
/// Flag: the bitmap tracks writes ("enabled").
pub const FLAG_AUTO: u32 = 1 << 1;
/// Flag: extra data may be ignored by readers that do not know it.
pub const FLAG_EXTRA_DATA_COMPATIBLE: u32 = 1 << 2;
/// Type of every bitmap QEMU knows: dirty tracking.
pub const TYPE_DIRTY_TRACKING: u8 = 1;

/// The decoded bitmaps extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExt {
    /// Entries in the directory.
    pub nb_bitmaps: u32,
    /// Directory size in bytes.
    pub dir_size: u64,
    /// Directory host offset.
    pub dir_offset: u64,
}

/// One directory entry, decoded (extra data kept so the entry can be written back as it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Host offset of the bitmap table.
    pub table_offset: u64,
    /// Entries in the bitmap table.
    pub table_size: u32,
    /// Flags (`FLAG_*`).
    pub flags: u32,
    /// log2 of the granularity.
    pub granularity_bits: u8,
    /// The name, raw.
    pub name: Vec<u8>,
    /// Extra data, raw.
    pub extra: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::corrupt(msg)
}

/// Bitmap table entries a bitmap of `granularity_bits` needs for `size` guest bytes.
pub fn table_entries(size: u64, granularity_bits: u8, cluster_size: u64) -> u64 {
    let bits = size.div_ceil(1u64 << granularity_bits);
    bits.div_ceil(8).div_ceil(cluster_size)
}

impl BitmapsExt {
    /// Decode and bound the extension body; `cs` is the cluster size, `file_size` the image file's.
    pub fn parse(body: &[u8], cs: u64, file_size: u64) -> Result<Self> {
        if body.len() != 24 {
            return Err(bad("bitmaps_ext: Invalid extension length"));
        }
        if be32(body, 4) != 0 {
            return Err(bad("bitmaps_ext: reserved32 is not zero"));
        }
        let e = BitmapsExt {
            nb_bitmaps: be32(body, 0),
            dir_size: be64(body, 8),
            dir_offset: be64(body, 16),
        };
        if e.nb_bitmaps > MAX_BITMAPS {
            return Err(bad(format!(
                "bitmaps_ext: Image has {} bitmaps, exceeding the QEMU supported maximum of {MAX_BITMAPS}",
                e.nb_bitmaps
            )));
        }
        if e.nb_bitmaps == 0 {
            return Err(bad("found bitmaps extension with zero bitmaps"));
        }
        if !e.dir_offset.is_multiple_of(cs) {
            return Err(bad("bitmaps_ext: invalid bitmap directory offset"));
        }
        if e.dir_size > MAX_DIRECTORY_BYTES {
            return Err(bad(format!(
                "bitmaps_ext: bitmap directory size ({}) exceeds the maximum supported size ({MAX_DIRECTORY_BYTES})",
                e.dir_size
            )));
        }
        if e.dir_size < 24 * e.nb_bitmaps as u64 {
            return Err(bad(
                "bitmaps_ext: bitmap directory is too small for its bitmaps",
            ));
        }
        if e.dir_offset == 0 || e.dir_offset.saturating_add(e.dir_size) > file_size {
            return Err(bad(format!(
                "Bitmap directory at {:#x}+{} is outside the image file",
                e.dir_offset, e.dir_size
            )));
        }
        Ok(e)
    }

    /// Encode the extension body.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&self.nb_bitmaps.to_be_bytes());
        b[8..16].copy_from_slice(&self.dir_size.to_be_bytes());
        b[16..].copy_from_slice(&self.dir_offset.to_be_bytes());
        b
    }
}

impl DirEntry {
    /// Bytes this entry takes in the directory (padded to 8).
    pub fn encoded_len(&self) -> usize {
        entry_len(self.name.len(), self.extra.len())
    }

    /// True if the bitmap was left in use (inconsistent).
    pub fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }

    /// True if the bitmap tracks writes.
    pub fn auto(&self) -> bool {
        self.flags & FLAG_AUTO != 0
    }

    /// The name as text (invalid UTF-8 replaced).
    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Append the encoded entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.table_offset.to_be_bytes());
        out.extend_from_slice(&self.table_size.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.push(TYPE_DIRTY_TRACKING);
        out.push(self.granularity_bits);
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.extra.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.extra);
        out.extend_from_slice(&self.name);
        out.resize(start + self.encoded_len(), 0);
    }

    /// QEMU's per-entry constraints (check_dir_entry) for an image of `size` guest bytes.
    fn validate(&self, ty: u8, cs: u64, size: u64, file_size: u64) -> Result<()> {
        let name = self.name_str();
        let fail = |why: &str| {
            bad(format!(
                "Bitmap '{name}' doesn't satisfy the constraints: {why}"
            ))
        };
        if ty != TYPE_DIRTY_TRACKING {
            return Err(fail(&format!("unknown type {ty}")));
        }
        if !GRANULARITY_BITS.contains(&self.granularity_bits) {
            return Err(fail(&format!(
                "granularity bits {} outside 9..31",
                self.granularity_bits
            )));
        }
        if self.flags & !(FLAG_IN_USE | FLAG_AUTO | FLAG_EXTRA_DATA_COMPATIBLE) != 0 {
            return Err(fail(&format!("reserved flags set ({:#x})", self.flags)));
        }
        if !self.extra.is_empty() && self.flags & FLAG_EXTRA_DATA_COMPATIBLE == 0 {
            return Err(Error::unsupported(format!(
                "Bitmap '{name}' has extra data QEMU does not know"
            )));
        }
        if self.name.len() > MAX_NAME {
            return Err(fail("name too long"));
        }
        if self.table_size == 0 || self.table_size > MAX_TABLE_ENTRIES {
            return Err(fail(&format!("table size {}", self.table_size)));
        }
        if self.table_offset == 0 || !self.table_offset.is_multiple_of(cs) {
            return Err(fail(&format!(
                "table offset {:#x} is not cluster aligned",
                self.table_offset
            )));
        }
        if self.table_size as u64 * cs > MAX_PHYS_BYTES {
            return Err(fail("bitmap data larger than 512 MiB"));
        }
        let need = table_entries(size, self.granularity_bits, cs);
        if !self.in_use() && self.table_size as u64 != need {
            return Err(fail(&format!(
                "table size {} does not match the image size ({need} entries needed)",
                self.table_size
            )));
        }
        if self.table_offset.saturating_add(self.table_size as u64 * 8) > file_size {
            return Err(fail(&format!(
                "table at {:#x} is outside the image file",
                self.table_offset
            )));
        }
        Ok(())
    }
}

/// Bytes a directory entry with these name and extra-data lengths takes.
pub fn entry_len(name: usize, extra: usize) -> usize {
    (24 + name + extra).div_ceil(8) * 8
}

/// Decode and bound every entry of the directory `raw` (exactly `ext.dir_size` bytes).
pub fn parse_directory(
    raw: &[u8],
    ext: &BitmapsExt,
    cs: u64,
    size: u64,
    file_size: u64,
) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < raw.len() {
        if out.len() as u32 >= ext.nb_bitmaps {
            return Err(bad("More bitmaps found than specified in header extension"));
        }
        if off + 24 > raw.len() {
            return Err(bad("Broken bitmap directory: entry header truncated"));
        }
        let extra_len = be32(raw, off + 20) as usize;
        let name_len = u16::from_be_bytes([raw[off + 18], raw[off + 19]]) as usize;
        let len = entry_len(name_len, extra_len);
        if extra_len > raw.len() || off + len > raw.len() {
            return Err(bad("Broken bitmap directory: entry overruns the directory"));
        }
        let e = DirEntry {
            table_offset: be64(raw, off),
            table_size: be32(raw, off + 8),
            flags: be32(raw, off + 12),
            granularity_bits: raw[off + 17],
            extra: raw[off + 24..off + 24 + extra_len].to_vec(),
            name: raw[off + 24 + extra_len..off + 24 + extra_len + name_len].to_vec(),
        };
        e.validate(raw[off + 16], cs, size, file_size)?;
        out.push(e);
        off += len;
    }
    if out.len() as u32 != ext.nb_bitmaps {
        return Err(bad("Less bitmaps found than specified in header extension"));
    }
    Ok(out)
}

/// Encode a whole directory.
pub fn encode_directory(entries: &[DirEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}
