//! The VHDX metadata region: a 64 KiB table of items, then the items themselves.
//!
//! ```text
//! table header: 0 signature "metadata" [8] | 8 reserved u16 | 10 entry_count u16 | 12 reserved [20]
//! entry (32 bytes, from 32): 0 item_id [16] | 16 offset u32 (from the region start, >= 64 KiB)
//!                            | 20 length u32 | 24 flags u32 (bit 0 user, 1 virtual disk, 2 required)
//! file parameters:       0 block_size u32 | 4 flags u32 (bit 0 leave blocks allocated, bit 1 has parent)
//! virtual disk size:     0 size u64
//! page 83 data:          0 guid [16]
//! logical sector size:   0 u32 (512 or 4096)
//! physical sector size:  0 u32 (512 or 4096)
//! parent locator:        0 locator type [16] | 16 reserved u16 | 18 key_value_count u16
//!                        | 20 entries: key_offset u32, value_offset u32, key_length u16, value_length u16
//!                        keys and values are UTF-16LE, offsets from the locator's start
//! ```
use super::{Guid, MIB};
use crate::bytes::{le32, le64};
use qimg_core::{Error, Result, Storage};

/// "metadata", the table signature.
pub const SIGNATURE: &[u8; 8] = b"metadata";
/// The table's reserved size.
pub const TABLE_SIZE: usize = 64 << 10;
/// File parameters item.
pub const FILE_PARAMS: Guid = Guid::parse("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
/// Virtual disk size item.
pub const DISK_SIZE: Guid = Guid::parse("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
/// Page 83 data item.
pub const PAGE83: Guid = Guid::parse("BECA12AB-B2E6-4523-93EF-C309E000C746");
/// Logical sector size item.
pub const LOGICAL_SECTOR: Guid = Guid::parse("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
/// Physical sector size item.
pub const PHYSICAL_SECTOR: Guid = Guid::parse("CDA348C7-445D-4471-9CC9-E9885251C556");
/// Parent locator item.
pub const PARENT_LOCATOR: Guid = Guid::parse("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/// The VHDX parent locator type.
pub const PARENT_TYPE_VHDX: Guid = Guid::parse("B04AEFB7-D19E-4A81-B789-25B8E9445913");
/// Largest virtual disk QEMU creates or opens (64 TiB).
pub const MAX_DISK_SIZE: u64 = 64 << 40;
/// Largest parent locator qimg reads.
const MAX_LOCATOR: u32 = 64 << 10;

/// The parent locator's key/value pairs (differencing images).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentLocator {
    /// (key, value) in stored order.
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The parent's file name to open: `relative_path` (backslashes as slashes), else
    /// `absolute_win32_path`; the graph builder passes it through the implicit-open gate.
    pub fn parent_name(&self) -> Option<String> {
        self.get("relative_path")
            .or_else(|| self.get("absolute_win32_path"))
            .map(|p| p.replace('\\', "/"))
    }
}

/// The metadata items qimg uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Payload block size (1..256 MiB, a power of two).
    pub block_size: u32,
    /// File parameters flag: blocks stay allocated (fixed images).
    pub leave_blocks_allocated: bool,
    /// File parameters flag: a differencing image.
    pub has_parent: bool,
    /// Virtual disk size in bytes.
    pub disk_size: u64,
    /// Page 83 GUID.
    pub page83: Guid,
    /// Logical sector size (512 or 4096).
    pub logical_sector: u32,
    /// Physical sector size (512 or 4096).
    pub physical_sector: u32,
    /// Parent locator, for differencing images.
    pub parent: Option<ParentLocator>,
}

/// Read an item of `len` bytes at `off` in the region, bounded by the region.
fn item(
    storage: &dyn Storage,
    region: (u64, u32),
    off: u32,
    len: u32,
    want: u32,
) -> Result<Vec<u8>> {
    if len < want || off < TABLE_SIZE as u32 || off as u64 + want as u64 > region.1 as u64 {
        return Err(Error::corrupt(format!(
            "VHDX metadata item at 0x{off:x} (length {len}) lies outside the metadata region"
        )));
    }
    let mut b = vec![0u8; want as usize];
    storage.read_at(&mut b, region.0 + off as u64)?;
    Ok(b)
}

impl Metadata {
    /// Read the metadata region at `region` (offset, length).
    pub fn read(storage: &dyn Storage, region: (u64, u32)) -> Result<Metadata> {
        let mut t = vec![0u8; TABLE_SIZE];
        storage.read_at(&mut t, region.0)?;
        if &t[..8] != SIGNATURE {
            return Err(Error::corrupt("VHDX metadata table signature is wrong"));
        }
        let n = u16::from_le_bytes([t[10], t[11]]) as usize;
        if n > 2047 {
            return Err(Error::corrupt(format!(
                "VHDX metadata table has {n} entries (at most 2047)"
            )));
        }
        let mut found: [Option<(u32, u32)>; 6] = [None; 6];
        let known = [
            FILE_PARAMS,
            DISK_SIZE,
            PAGE83,
            LOGICAL_SECTOR,
            PHYSICAL_SECTOR,
            PARENT_LOCATOR,
        ];
        for i in 0..n {
            let e = &t[32 + i * 32..64 + i * 32];
            let id = Guid::read(e, 0);
            let (off, len, flags) = (le32(e, 16), le32(e, 20), le32(e, 24));
            match known.iter().position(|g| *g == id) {
                Some(k) if found[k].is_some() => {
                    return Err(Error::corrupt(format!(
                        "VHDX metadata item {} appears twice",
                        id.to_text()
                    )))
                }
                Some(k) => found[k] = Some((off, len)),
                None if flags & 4 != 0 => {
                    return Err(Error::unsupported(format!(
                        "VHDX metadata item {} is required but unknown",
                        id.to_text()
                    )))
                }
                None => {}
            }
        }
        let need = |k: usize| {
            found[k].ok_or_else(|| {
                Error::unsupported(format!(
                    "VHDX metadata lacks the required item {}",
                    known[k].to_text()
                ))
            })
        };
        let (o, l) = need(0)?;
        let fp = item(storage, region, o, l, 8)?;
        let (o, l) = need(1)?;
        let disk_size = le64(&item(storage, region, o, l, 8)?, 0);
        let (o, l) = need(2)?;
        let page83 = Guid::read(&item(storage, region, o, l, 16)?, 0);
        let (o, l) = need(3)?;
        let logical_sector = le32(&item(storage, region, o, l, 4)?, 0);
        let (o, l) = need(4)?;
        let physical_sector = le32(&item(storage, region, o, l, 4)?, 0);
        let block_size = le32(&fp, 0);
        let flags = le32(&fp, 4);
        let has_parent = flags & 2 != 0;
        if !(MIB..=256 * MIB).contains(&(block_size as u64)) || !block_size.is_power_of_two() {
            return Err(Error::corrupt(format!(
                "VHDX block size {block_size} is not a power of two in 1 MiB..256 MiB"
            )));
        }
        if logical_sector != 512 && logical_sector != 4096 {
            return Err(Error::corrupt(format!(
                "VHDX logical sector size {logical_sector} is not 512 or 4096"
            )));
        }
        if physical_sector != 512 && physical_sector != 4096 {
            return Err(Error::corrupt(format!(
                "VHDX physical sector size {physical_sector} is not 512 or 4096"
            )));
        }
        if disk_size > MAX_DISK_SIZE || !disk_size.is_multiple_of(logical_sector as u64) {
            return Err(Error::corrupt(format!(
                "VHDX virtual disk size {disk_size} is out of range (at most 64 TiB, whole sectors)"
            )));
        }
        let parent = if has_parent {
            let (o, l) = found[5].ok_or_else(|| {
                Error::corrupt("VHDX differencing image lacks its parent locator")
            })?;
            if l > MAX_LOCATOR {
                return Err(Error::corrupt(format!(
                    "VHDX parent locator is {l} bytes (at most {MAX_LOCATOR})"
                )));
            }
            Some(parse_locator(&item(storage, region, o, l, l)?)?)
        } else {
            None
        };
        Ok(Metadata {
            block_size,
            leave_blocks_allocated: flags & 1 != 0,
            has_parent,
            disk_size,
            page83,
            logical_sector,
            physical_sector,
            parent,
        })
    }

    /// Sectors of one payload block.
    pub fn chunk_ratio(&self) -> u64 {
        (1u64 << 23) * self.logical_sector as u64 / self.block_size as u64
    }

    /// The metadata region's contents (table + items), for create.
    pub fn encode(&self) -> Vec<u8> {
        let mut items: Vec<(Guid, Vec<u8>, u32)> = Vec::new();
        let mut fp = self.block_size.to_le_bytes().to_vec();
        let flags = self.leave_blocks_allocated as u32 | ((self.has_parent as u32) << 1);
        fp.extend_from_slice(&flags.to_le_bytes());
        items.push((FILE_PARAMS, fp, 4));
        items.push((DISK_SIZE, self.disk_size.to_le_bytes().to_vec(), 6));
        items.push((PAGE83, self.page83.0.to_vec(), 6));
        items.push((
            LOGICAL_SECTOR,
            self.logical_sector.to_le_bytes().to_vec(),
            6,
        ));
        items.push((
            PHYSICAL_SECTOR,
            self.physical_sector.to_le_bytes().to_vec(),
            6,
        ));
        if let Some(p) = &self.parent {
            items.push((PARENT_LOCATOR, encode_locator(p), 4));
        }
        let mut b = vec![0u8; TABLE_SIZE];
        b[..8].copy_from_slice(SIGNATURE);
        b[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut off = TABLE_SIZE;
        for (i, (id, data, flags)) in items.iter().enumerate() {
            let e = &mut b[32 + i * 32..64 + i * 32];
            e[..16].copy_from_slice(&id.0);
            e[16..20].copy_from_slice(&(off as u32).to_le_bytes());
            e[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            e[24..28].copy_from_slice(&flags.to_le_bytes());
            off += data.len();
        }
        for (_, data, _) in &items {
            b.extend_from_slice(data);
        }
        b
    }
}

/// UTF-16LE bytes to a string (lossy on unpaired surrogates).
fn utf16(b: &[u8]) -> String {
    let u: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&u)
}

/// Parse a parent locator item, bounding every key and value by the item.
pub fn parse_locator(b: &[u8]) -> Result<ParentLocator> {
    if b.len() < 20 {
        return Err(Error::corrupt("VHDX parent locator is too short"));
    }
    if Guid::read(b, 0) != PARENT_TYPE_VHDX {
        return Err(Error::unsupported("VHDX parent locator type is not VHDX"));
    }
    let n = u16::from_le_bytes([b[18], b[19]]) as usize;
    if 20 + n * 12 > b.len() {
        return Err(Error::corrupt(
            "VHDX parent locator entries overrun the item",
        ));
    }
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let e = &b[20 + i * 12..32 + i * 12];
        let (ko, vo) = (le32(e, 0) as usize, le32(e, 4) as usize);
        let (kl, vl) = (
            u16::from_le_bytes([e[8], e[9]]) as usize,
            u16::from_le_bytes([e[10], e[11]]) as usize,
        );
        if ko + kl > b.len() || vo + vl > b.len() || kl == 0 || vl == 0 {
            return Err(Error::corrupt(
                "VHDX parent locator key or value lies outside the item",
            ));
        }
        entries.push((utf16(&b[ko..ko + kl]), utf16(&b[vo..vo + vl])));
    }
    Ok(ParentLocator { entries })
}

/// Encode a parent locator item.
pub fn encode_locator(p: &ParentLocator) -> Vec<u8> {
    let mut b = vec![0u8; 20 + p.entries.len() * 12];
    b[..16].copy_from_slice(&PARENT_TYPE_VHDX.0);
    b[18..20].copy_from_slice(&(p.entries.len() as u16).to_le_bytes());
    for (i, (k, v)) in p.entries.iter().enumerate() {
        let mut put = |s: &str| {
            let off = b.len();
            for u in s.encode_utf16() {
                b.extend_from_slice(&u.to_le_bytes());
            }
            (off as u32, (b.len() - off) as u16)
        };
        let (ko, kl) = put(k);
        let (vo, vl) = put(v);
        let e = &mut b[20 + i * 12..32 + i * 12];
        e[0..4].copy_from_slice(&ko.to_le_bytes());
        e[4..8].copy_from_slice(&vo.to_le_bytes());
        e[8..10].copy_from_slice(&kl.to_le_bytes());
        e[10..12].copy_from_slice(&vl.to_le_bytes());
    }
    b
}
