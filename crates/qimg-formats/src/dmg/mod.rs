//! DMG (Apple UDIF) images, read-only: the koly trailer, the XML plist or binary resource fork,
//! the mish block tables, and chunks stored zero, raw, ignore, zlib, bzip2, ADC, LZFSE or LZMA
//! (QEMU 7.2 reads zlib only, plus bzip2/lzfse when built with them).
//!
//! Roles as in every format folder: [`header`] (koly and mish layouts and bounds: plists ≤ 64
//! MiB, data chunks ≤ 64 MiB stored and decoded, stored bytes inside the file), [`plist`]
//! (finding the blkx tables), [`mapping`] (the sorted chunk table), [`compress`] (bounded
//! decoders) and [`driver`]. Encrypted images are refused with `ERR_QIMG_UNSUPPORTED`.
pub mod compress;
pub mod driver;
pub mod header;
pub mod mapping;
pub mod plist;

pub use driver::DmgDriver;

/// Probe score by content: 100 when the last 512 bytes are a koly trailer (QEMU probes by the
/// `.dmg` suffix only, scoring 2, which qimg keeps for files it cannot read the tail of).
pub fn probe(tail: &[u8], filename: &str) -> u32 {
    if tail.len() >= 512 && tail[tail.len() - 512..].starts_with(b"koly") {
        100
    } else if filename.ends_with(".dmg") {
        2
    } else {
        0
    }
}
