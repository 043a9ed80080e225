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

/// Where cryptsetup looks for the secondary header when the primary's `hdr_size` cannot be
/// trusted: every valid header-area size (the secondary follows the primary's area).
const SECONDARY_OFFSETS: [u64; 9] = [
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
];

/// Read one binary header and its area at `offset` (0 for the primary, with magic
/// `LUKS\xba\xbe`; the secondary's own offset, with magic `SKUL\xba\xbe`) and verify its
/// checksum. Returns the header fields and the whole checked area.
fn read_one(io: &dyn HeaderIo, offset: u64, file_len: u64) -> Result<(BinHeader, Vec<u8>)> {
    let mut bin = vec![0u8; BIN_LEN];
    if offset.saturating_add(BIN_LEN as u64) > file_len {
        return Err(Error::corrupt("LUKS2 header is truncated"));
    }
    io.read_at(offset, &mut bin)?;
    let magic: &[u8; 6] = if offset == 0 {
        b"LUKS\xba\xbe"
    } else {
        b"SKUL\xba\xbe"
    };
    if bin[..6] != *magic {
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
    if offset.saturating_add(hdr_size) > file_len {
        return Err(Error::corrupt(
            "LUKS2 header area is beyond the end of the image",
        ));
    }
    if be64(&bin, 256) != offset {
        return Err(Error::corrupt(format!(
            "LUKS2 header at {offset} records offset {}",
            be64(&bin, 256)
        )));
    }
    let alg = cstr(&bin[72..104], "checksum algorithm")?;
    let hash = HashAlg::parse(&alg)?;
    let mut area = vec![0u8; hdr_size as usize];
    io.read_at(offset, &mut area)?;
    let stored = area[448..448 + hash.digest_len()].to_vec();
    area[448..512].fill(0);
    if hash.digest(&[&area]) != stored {
        return Err(Error::corrupt("LUKS2 header checksum mismatch"));
    }
    let h = BinHeader {
        hdr_size,
        seqid: be64(&bin, 16),
        label: cstr(&bin[24..72], "label")?,
        uuid: cstr(&bin[168..208], "UUID")?,
    };
    Ok((h, area))
}

/// Read the header and its JSON: the primary if its binary header and checksum are valid, else
/// (as cryptsetup does) the secondary, found at the offset the primary's `hdr_size` gives or,
/// when that is unusable, at each possible area size. When both are valid the higher `seqid`
/// wins. The checksum is verified before the JSON is parsed.
pub fn read_area(io: &dyn HeaderIo, file_len: u64) -> Result<(BinHeader, Value)> {
    let primary = read_one(io, 0, file_len);
    let hint = {
        let mut b = [0u8; 16];
        (file_len >= 16 && io.read_at(0, &mut b).is_ok()).then(|| be64(&b, 8))
    };
    let secondary = match hint.filter(|h| SECONDARY_OFFSETS.contains(h)) {
        Some(at) => read_one(io, at, file_len).ok(),
        None => match &primary {
            Ok(_) => None,
            Err(_) => SECONDARY_OFFSETS
                .iter()
                .find_map(|&at| read_one(io, at, file_len).ok()),
        },
    };
    let (h, area) = match (primary, secondary) {
        (Ok(p), Some(s)) if s.0.seqid > p.0.seqid => s,
        (Ok(p), _) => p,
        (Err(_), Some(s)) => s,
        (Err(e), None) => return Err(e),
    };
    let json = &area[BIN_LEN..];
    let end = json
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| Error::corrupt("LUKS2 JSON area is not NUL terminated"))?;
    let value: Value = serde_json::from_slice(&json[..end])
        .map_err(|e| Error::corrupt(format!("LUKS2 JSON metadata is invalid: {e}")))?;
    Ok((h, value))
}
