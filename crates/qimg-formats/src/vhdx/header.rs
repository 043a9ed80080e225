//! The VHDX header section (the first 1 MiB): file type identifier, two headers chosen by
//! sequence number, and the region table naming the BAT and metadata regions.
//!
//! ```text
//! 0       file type identifier  "vhdxfile" + creator (UTF-16LE, 512 bytes)
//! 64 KiB  header 1              (4 KiB checksummed, 64 KiB reserved)
//! 128 KiB header 2
//! 192 KiB region table 1        (64 KiB checksummed)
//! 256 KiB region table 2
//! 1 MiB   log, BAT, metadata, payload blocks (each at a 1 MiB multiple)
//! ```
use super::{crc_ok, set_crc, Guid, MIB};
use crate::bytes::{le32, le64};
use qimg_core::{Error, ErrorCode, Result};

/// The file type identifier's signature at offset 0.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Header signature "head".
pub const HEADER_SIGNATURE: u32 = 0x6461_6568;
/// Region table signature "regi".
pub const REGION_SIGNATURE: u32 = 0x6967_6572;
/// Offsets of the two headers.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Offsets of the two region tables.
pub const REGION_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Bytes a header's checksum covers.
pub const HEADER_SIZE: usize = 4096;
/// Bytes a region table's checksum covers.
pub const REGION_SIZE: usize = 64 << 10;
/// Most region table entries the spec allows.
pub const REGION_MAX_ENTRIES: u32 = 2047;
/// The BAT region's GUID.
pub const BAT_GUID: Guid = Guid::parse("2DC27766-F623-4200-9D64-115E9BFD4A08");
/// The metadata region's GUID.
pub const METADATA_GUID: Guid = Guid::parse("8B7CA206-4790-4B9A-B8FE-575F050F886E");

/// One VHDX header.
///
/// ```text
/// 0   signature "head" u32 | 4 checksum u32 (CRC-32C over 4 KiB) | 8 sequence_number u64
/// 16  file_write_guid      | 32 data_write_guid | 48 log_guid
/// 64  log_version u16 (0)  | 66 version u16 (1) | 68 log_length u32 | 72 log_offset u64
/// 80  reserved (to 4 KiB)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxHeader {
    /// Higher wins between the two headers.
    pub sequence_number: u64,
    /// Changed before the first write to the file in a session.
    pub file_write_guid: Guid,
    /// Changed before the first guest-visible write.
    pub data_write_guid: Guid,
    /// Non-zero when the log may hold entries to replay.
    pub log_guid: Guid,
    /// Log format version (0).
    pub log_version: u16,
    /// Header version (1).
    pub version: u16,
    /// Log size in bytes (a multiple of 1 MiB).
    pub log_length: u32,
    /// Log offset in bytes (a multiple of 1 MiB, at least 1 MiB).
    pub log_offset: u64,
}

impl VhdxHeader {
    /// Parse a 4 KiB header; `None` when its signature, checksum or version is wrong (the other
    /// header may still be good).
    pub fn parse(b: &[u8]) -> Option<VhdxHeader> {
        if b.len() < HEADER_SIZE || le32(b, 0) != HEADER_SIGNATURE || !crc_ok(&b[..HEADER_SIZE], 4)
        {
            return None;
        }
        let h = VhdxHeader {
            sequence_number: le64(b, 8),
            file_write_guid: Guid::read(b, 16),
            data_write_guid: Guid::read(b, 32),
            log_guid: Guid::read(b, 48),
            log_version: u16::from_le_bytes([b[64], b[65]]),
            version: u16::from_le_bytes([b[66], b[67]]),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        };
        (h.version == 1).then_some(h)
    }

    /// The 4 KiB on-disk form with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&HEADER_SIGNATURE.to_le_bytes());
        b[8..16].copy_from_slice(&self.sequence_number.to_le_bytes());
        b[16..32].copy_from_slice(&self.file_write_guid.0);
        b[32..48].copy_from_slice(&self.data_write_guid.0);
        b[48..64].copy_from_slice(&self.log_guid.0);
        b[64..66].copy_from_slice(&self.log_version.to_le_bytes());
        b[66..68].copy_from_slice(&self.version.to_le_bytes());
        b[68..72].copy_from_slice(&self.log_length.to_le_bytes());
        b[72..80].copy_from_slice(&self.log_offset.to_le_bytes());
        set_crc(&mut b, 4);
        b
    }

    /// Check the log location against the file (QEMU registers it as a region; a log inside
    /// the header section or past 2^63 is corrupt).
    pub fn validate_log(&self) -> Result<()> {
        if self.log_version != 0 {
            return Err(Error::unsupported(format!(
                "VHDX log version {} is not supported",
                self.log_version
            )));
        }
        let len = self.log_length as u64;
        if !len.is_multiple_of(MIB) || !self.log_offset.is_multiple_of(MIB) || self.log_offset < MIB
        {
            return Err(Error::corrupt(format!(
                "VHDX log (offset 0x{:x}, length 0x{len:x}) is not 1 MiB aligned past the header section",
                self.log_offset
            )));
        }
        if self.log_offset.checked_add(len).is_none_or(|e| e > 1 << 62) {
            return Err(Error::corrupt("VHDX log offset is out of range"));
        }
        Ok(())
    }
}

/// Pick the current header from the two 4 KiB slots: the valid one, or the one with the higher
/// sequence number (equal numbers only when both are identical, as Disk2VHD writes them).
/// Returns the header and its slot (0 or 1).
pub fn choose_header(h1: &[u8], h2: &[u8]) -> Result<(VhdxHeader, usize)> {
    match (VhdxHeader::parse(h1), VhdxHeader::parse(h2)) {
        (Some(a), None) => Ok((a, 0)),
        (None, Some(b)) => Ok((b, 1)),
        (None, None) => Err(Error::corrupt("No valid VHDX header found")),
        (Some(a), Some(b)) => {
            if a.sequence_number > b.sequence_number {
                Ok((a, 0))
            } else if b.sequence_number > a.sequence_number {
                Ok((b, 1))
            } else if a == b {
                Ok((a, 0))
            } else {
                Err(Error::corrupt(
                    "No valid VHDX header found (both headers have the same sequence number)",
                ))
            }
        }
    }
}

/// One region table entry.
///
/// ```text
/// 0 guid [16] | 16 file_offset u64 | 24 length u32 | 28 bits u32 (bit 0: required)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Byte offset in the file (1 MiB multiple).
    pub offset: u64,
    /// Length in bytes (1 MiB multiple).
    pub length: u32,
}

/// The region table's two known regions.
///
/// ```text
/// 0 signature "regi" u32 | 4 checksum u32 (CRC-32C over 64 KiB) | 8 entry_count u32 | 12 reserved
/// 16 entries [32 bytes each], at most 2047
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionTable {
    /// The BAT region.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
}

impl RegionTable {
    /// Parse a 64 KiB region table, rejecting overlaps (with each other and with `log`), an
    /// unknown required region, duplicates and missing regions, as QEMU does.
    pub fn parse(b: &[u8], log: (u64, u64)) -> Result<RegionTable> {
        if b.len() < REGION_SIZE || !crc_ok(&b[..REGION_SIZE], 4) {
            return Err(Error::corrupt("VHDX region table checksum mismatch"));
        }
        if le32(b, 0) != REGION_SIGNATURE {
            return Err(Error::corrupt("VHDX region table signature is wrong"));
        }
        let n = le32(b, 8);
        if n > REGION_MAX_ENTRIES {
            return Err(Error::corrupt(format!(
                "VHDX region table has {n} entries (at most {REGION_MAX_ENTRIES})"
            )));
        }
        let mut used: Vec<(u64, u64)> = vec![(0, MIB), (log.0, log.0 + log.1)];
        let (mut bat, mut meta) = (None, None);
        for i in 0..n as usize {
            let e = &b[16 + i * 32..16 + (i + 1) * 32];
            let guid = Guid::read(e, 0);
            let offset = le64(e, 16);
            let length = le32(e, 24);
            let required = le32(e, 28) & 1 != 0;
            let end = offset
                .checked_add(length as u64)
                .filter(|&e| e <= 1 << 62)
                .ok_or_else(|| Error::corrupt("VHDX region is out of range"))?;
            if !offset.is_multiple_of(MIB) || !(length as u64).is_multiple_of(MIB) || length == 0 {
                return Err(Error::corrupt(format!(
                    "VHDX region at 0x{offset:x} (length 0x{length:x}) is not 1 MiB aligned"
                )));
            }
            if used.iter().any(|&(s, e2)| offset < e2 && end > s) {
                return Err(Error::corrupt(format!(
                    "VHDX region at 0x{offset:x} overlaps another region"
                )));
            }
            used.push((offset, end));
            let slot = if guid == BAT_GUID {
                &mut bat
            } else if guid == METADATA_GUID {
                &mut meta
            } else if required {
                return Err(Error::unsupported(format!(
                    "VHDX region {} is required but unknown",
                    guid.to_text()
                )));
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(Error::corrupt("VHDX region table names a region twice"));
            }
            *slot = Some(Region { offset, length });
        }
        match (bat, meta) {
            (Some(bat), Some(metadata)) => Ok(RegionTable { bat, metadata }),
            _ => Err(Error::corrupt(
                "VHDX region table lacks the BAT or metadata region",
            )),
        }
    }

    /// The 64 KiB on-disk form with its checksum (BAT and metadata entries, both required).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; REGION_SIZE];
        b[0..4].copy_from_slice(&REGION_SIGNATURE.to_le_bytes());
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (i, (g, r)) in [(BAT_GUID, self.bat), (METADATA_GUID, self.metadata)]
            .iter()
            .enumerate()
        {
            let e = &mut b[16 + i * 32..16 + (i + 1) * 32];
            e[0..16].copy_from_slice(&g.0);
            e[16..24].copy_from_slice(&r.offset.to_le_bytes());
            e[24..28].copy_from_slice(&r.length.to_le_bytes());
            e[28..32].copy_from_slice(&1u32.to_le_bytes());
        }
        set_crc(&mut b, 4);
        b
    }
}

/// Error for a file that is not VHDX at all.
pub fn not_vhdx() -> Error {
    Error::new(ErrorCode::WrongFormat, "Image not in VHDX format")
}
