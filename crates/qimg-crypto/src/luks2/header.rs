//! The LUKS2 binary header and its JSON metadata area (LUKS2 On-Disk Format Specification,
//! version 1.1), read-only.
//!
//! ```text
//! offset  size  field                  (integers big-endian)
//!      0     6  magic                  "LUKS\xba\xbe" (primary), "SKUL\xba\xbe" (secondary)
//!      6     2  version                2
//!      8     8  hdr_size               binary header + JSON area, 16 KiB … 4 MiB (power of two)
//!     16     8  seqid
//!     24    48  label
//!     72    32  checksum_alg           "sha256"
//!    104    64  salt
//!    168    40  uuid                   NUL-terminated
//!    208    48  subsystem
//!    256     8  hdr_offset             this header's offset
//!    264   184  padding
//!    448    64  csum                   checksum_alg over hdr_size bytes with csum zeroed
//!    512  3584  padding
//!   4096     …  JSON text, NUL-padded to hdr_size
//! ```
use crate::hash::HashAlg;
use crate::luks1::HeaderIo;
use qimg_core::{Error, Result};
use serde_json::Value;

/// Smallest header area (binary + JSON).
pub const MIN_HDR_SIZE: u64 = 16 << 10;
/// Largest header area.
pub const MAX_HDR_SIZE: u64 = 4 << 20;
/// Binary header length.
pub const BIN_LEN: usize = 4096;

/// The fields of the binary header qimg uses.
#[derive(Debug, Clone)]
pub struct BinHeader {
    /// Size of the binary header plus JSON area.
    pub hdr_size: u64,
    /// Sequence id.
    pub seqid: u64,
    /// Label text.
    pub label: String,
    /// UUID text.
    pub uuid: String,
}

fn cstr(b: &[u8], what: &str) -> Result<String> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| Error::corrupt(format!("LUKS2 header {what} is not NUL terminated")))?;
    std::str::from_utf8(&b[..end])
        .map(str::to_string)
        .map_err(|_| Error::corrupt(format!("LUKS2 header {what} is not valid text")))
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Read the primary header and its JSON; the checksum is verified before the JSON is parsed.
pub fn read_area(io: &dyn HeaderIo, file_len: u64) -> Result<(BinHeader, Value)> {
    let mut bin = vec![0u8; BIN_LEN];
    if file_len < BIN_LEN as u64 {
        return Err(Error::corrupt("LUKS2 header is truncated"));
    }
    io.read_at(0, &mut bin)?;
    if bin[..6] != *b"LUKS\xba\xbe" {
        return Err(Error::new(
            qimg_core::ErrorCode::WrongFormat,
            "Volume is not in LUKS format",
        ));
    }
    let version = u16::from_be_bytes([bin[6], bin[7]]);
    if version != 2 {
        return Err(Error::unsupported(format!(
            "LUKS version {version} is not supported"
        )));
    }
    let hdr_size = be64(&bin, 8);
    if !(MIN_HDR_SIZE..=MAX_HDR_SIZE).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return Err(Error::corrupt(format!(
            "LUKS2 header size {hdr_size} is invalid"
        )));
    }
    if hdr_size > file_len {
        return Err(Error::corrupt(
            "LUKS2 header area is beyond the end of the image",
        ));
    }
    if be64(&bin, 256) != 0 {
        return Err(Error::corrupt("LUKS2 primary header has a nonzero offset"));
    }
    let alg = cstr(&bin[72..104], "checksum algorithm")?;
    let hash = HashAlg::parse(&alg)?;
    let mut area = vec![0u8; hdr_size as usize];
    io.read_at(0, &mut area)?;
    let stored = area[448..448 + hash.digest_len()].to_vec();
    area[448..512].fill(0);
    if hash.digest(&[&area]) != stored {
        return Err(Error::corrupt("LUKS2 header checksum mismatch"));
    }
    let json = &area[BIN_LEN..];
    let end = json
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| Error::corrupt("LUKS2 JSON area is not NUL terminated"))?;
    let value: Value = serde_json::from_slice(&json[..end])
        .map_err(|e| Error::corrupt(format!("LUKS2 JSON metadata is invalid: {e}")))?;
    let h = BinHeader {
        hdr_size,
        seqid: be64(&bin, 16),
        label: cstr(&bin[24..72], "label")?,
        uuid: cstr(&bin[168..208], "UUID")?,
    };
    Ok((h, value))
}
