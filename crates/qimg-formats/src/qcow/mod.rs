//! qcow version 1, QEMU's original copy-on-write format: a 48-byte header, one L1 table, L2
//! tables and data clusters appended at the end of the file; clusters may be stored compressed.
//!
//! Roles as in every format folder: [`header`] (on-disk header and bounds), [`mapping`] (table
//! entries and compressed clusters, on the shared [`crate::l2map`] engine), [`create`] and
//! [`driver`]. qcow has no consistency check (qemu-img exits 63). AES-encrypted images
//! (`crypt_method` 1) read and write through [`crate::legacy_aes::LegacyAes`] given the
//! `encrypt.key-secret`; without it they open for `info` only.
pub mod create;
pub mod driver;
pub mod header;
pub mod mapping;

pub use create::create;
pub use driver::QcowDriver;

/// Probe score: 100 for the `QFI\xfb` magic with version 1, as QEMU's `qcow_probe`.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 8
        && first[..4] == header::MAGIC.to_be_bytes()
        && first[4..8] == header::VERSION.to_be_bytes()
    {
        100
    } else {
        0
    }
}
