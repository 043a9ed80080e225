//! UDIF (DMG) on-disk structures: the koly trailer and the mish block tables, with their bounds.
//!
//! ```text
//! koly trailer: the last 512 bytes of the file, big-endian
//!     0: magic "koly"          4: version        8: header size (512)   12: flags
//!    16: running data fork offset (u64)          24: data fork offset (u64)
//!    32: data fork length      40: resource fork offset   48: resource fork length
//!    56: segment number, count, id (24 bytes)    80: data checksum (type, size, 128 bytes)
//!   216: XML plist offset (u64)                 224: XML plist length (u64)
//!   352: master checksum (136 bytes)            488: image variant   492: sector count (u64)
//!
//! mish block table (a "blkx" resource), big-endian
//!     0: magic "mish"   4: version   8: first sector (u64)   16: sector count (u64)
//!    24: data offset (u64)   32: buffers needed   36: block descriptors   40: reserved (24)
//!    64: checksum (136 bytes)   200: number of chunks (u32)   204: chunks, 40 bytes each:
//!        0: type   4: comment   8: sector (u64, from first sector)   16: sector count (u64)
//!       24: stored offset (u64, from data fork + data offset)   32: stored length (u64)
//! ```
//! Apple's encrypted images start with "encrcdsa" (v2) or end with "cdsaencr" (v1): refused.
use crate::bytes::{be32, be64};
use qimg_core::{Error, ErrorCode, Result};

/// koly trailer size.
pub const KOLY_SIZE: u64 = 512;
/// Largest XML plist or resource fork read (64 MiB).
pub const MAX_PLIST: u64 = 64 << 20;
/// Largest chunk, stored or decoded (QEMU's `DMG_LENGTHS_MAX`, 64 MiB).
pub const MAX_CHUNK: u64 = 64 << 20;
/// Largest virtual size accepted (2^55 bytes).
pub const MAX_SECTORS: u64 = 1 << 46;
/// Sector size.
pub const SECTOR: u64 = 512;

/// Chunk types.
pub mod kind {
    /// Reads as zeros.
    pub const ZERO: u32 = 0;
    /// Stored as is.
    pub const RAW: u32 = 1;
    /// Reads as zeros (free space).
    pub const IGNORE: u32 = 2;
    /// Apple Data Compression.
    pub const ADC: u32 = 0x8000_0004;
    /// zlib.
    pub const ZLIB: u32 = 0x8000_0005;
    /// bzip2.
    pub const BZIP2: u32 = 0x8000_0006;
    /// LZFSE.
    pub const LZFSE: u32 = 0x8000_0007;
    /// LZMA (xz container).
    pub const LZMA: u32 = 0x8000_0008;
    /// A comment: no data.
    pub const COMMENT: u32 = 0x7fff_fffe;
    /// The table's terminator: no data.
    pub const TERMINATOR: u32 = 0xffff_ffff;
}

/// The koly fields qimg uses.
#[derive(Debug, Clone, Copy)]
pub struct Koly {
    /// Data fork start in the file.
    pub data_fork_offset: u64,
    /// Resource fork start and length.
    pub rsrc: (u64, u64),
    /// XML plist start and length.
    pub xml: (u64, u64),
    /// Sector count the trailer states.
    pub sector_count: u64,
}

/// "Not a DMG" (`ERR_QIMG_WRONG_FORMAT`).
fn wrong(msg: &str) -> Error {
    Error::new(ErrorCode::WrongFormat, msg)
}

/// True if the first bytes are an encrypted image's header.
pub fn is_encrypted(head: &[u8], tail: &[u8]) -> bool {
    head.starts_with(b"encrcdsa") || tail.ends_with(b"cdsaencr")
}

impl Koly {
    /// Decode the trailer (`b` = the last 512 bytes) of a file of `file_size` bytes.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Koly> {
        if b.len() < KOLY_SIZE as usize || &b[..4] != b"koly" {
            return Err(wrong("Image not in DMG (UDIF) format: no koly trailer"));
        }
        let k = Koly {
            data_fork_offset: be64(b, 24),
            rsrc: (be64(b, 40), be64(b, 48)),
            xml: (be64(b, 216), be64(b, 224)),
            sector_count: be64(b, 492),
        };
        let body = file_size - KOLY_SIZE;
        for (what, (off, len)) in [("XML plist", k.xml), ("resource fork", k.rsrc)] {
            if len > MAX_PLIST {
                return Err(Error::corrupt(format!(
                    "dmg: {what} of {len} bytes is larger than {MAX_PLIST}"
                )));
            }
            if off.checked_add(len).is_none_or(|e| e > body) {
                return Err(Error::corrupt(format!(
                    "dmg: {what} ({off}+{len}) lies outside the file"
                )));
            }
        }
        if k.xml.1 == 0 && k.rsrc.1 == 0 {
            return Err(Error::corrupt(
                "dmg: the image has neither an XML plist nor a resource fork",
            ));
        }
        if k.data_fork_offset > body {
            return Err(Error::corrupt(
                "dmg: data fork offset lies outside the file",
            ));
        }
        Ok(k)
    }
}

/// One chunk: guest sectors `[sector, sector + count)` stored as `kind` at `[offset, offset + length)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Chunk type ([`kind`]).
    pub kind: u32,
    /// First guest sector.
    pub sector: u64,
    /// Guest sectors.
    pub count: u64,
    /// Host offset of the stored bytes.
    pub offset: u64,
    /// Stored bytes.
    pub length: u64,
}

/// Decode one mish table into `out`, bounding every chunk: known type, sector count and stored
/// length ≤ 64 MiB for data chunks, stored bytes inside the file's data area.
pub fn parse_mish(b: &[u8], data_fork: u64, body: u64, out: &mut Vec<Chunk>) -> Result<()> {
    if b.len() < 204 || &b[..4] != b"mish" {
        return Err(Error::corrupt(
            "dmg: blkx resource is not a mish block table",
        ));
    }
    let first = be64(b, 8);
    let data_offset = be64(b, 24);
    let n = be32(b, 200) as usize;
    if n > (b.len() - 204) / 40 {
        return Err(Error::corrupt(format!(
            "dmg: mish table claims {n} chunks but holds {}",
            (b.len() - 204) / 40
        )));
    }
    for i in 0..n {
        let c = &b[204 + 40 * i..204 + 40 * (i + 1)];
        let kind = be32(c, 0);
        if kind == kind::COMMENT || kind == kind::TERMINATOR {
            continue;
        }
        let bad = |why: String| Error::corrupt(format!("dmg: chunk {i}: {why}"));
        let sector = first
            .checked_add(be64(c, 8))
            .ok_or_else(|| bad("sector overflows".into()))?;
        let count = be64(c, 16);
        let length = be64(c, 32);
        let offset = data_fork
            .checked_add(data_offset)
            .and_then(|o| o.checked_add(be64(c, 24)))
            .ok_or_else(|| bad("offset overflows".into()))?;
        if sector.checked_add(count).is_none_or(|e| e > MAX_SECTORS) {
            return Err(bad(format!("sectors {sector}+{count} are out of range")));
        }
        match kind {
            kind::ZERO | kind::IGNORE => {}
            kind::RAW | kind::ADC | kind::ZLIB | kind::BZIP2 | kind::LZFSE | kind::LZMA => {
                if count * SECTOR > MAX_CHUNK {
                    return Err(bad(format!(
                        "sector count {count} is larger than max ({})",
                        MAX_CHUNK / SECTOR
                    )));
                }
                if length > MAX_CHUNK {
                    return Err(bad(format!(
                        "length {length} is larger than max ({MAX_CHUNK})"
                    )));
                }
                if offset.checked_add(length).is_none_or(|e| e > body) {
                    return Err(bad(format!(
                        "stored bytes {offset}+{length} lie outside the file"
                    )));
                }
                if kind == kind::RAW && length < count * SECTOR {
                    return Err(bad(format!(
                        "raw chunk stores {length} bytes for {count} sectors"
                    )));
                }
            }
            0x8000_0001..=0x8000_0003 | 0x8000_0009.. => {
                return Err(Error::unsupported(format!(
                    "dmg: chunk {i} has unknown compression type {kind:#x}"
                )))
            }
            other => {
                return Err(bad(format!("unknown chunk type {other:#x}")));
            }
        }
        if count > 0 {
            out.push(Chunk {
                kind,
                sector,
                count,
                offset,
                length,
            });
        }
    }
    Ok(())
}
