//! LUKS, as QEMU's `luks` driver: a LUKS1 header at offset 0, the encrypted payload after the
//! key material; the guest sees the decrypted payload. LUKS2 images (cryptsetup's default) are
//! read too, which QEMU refuses.
//!
//! Roles: [`header`] (reading either version through the storage, `info`'s block), [`options`]
//! (create options as QEMU names them), [`create`], [`driver`] (the [`qimg_core::BlockDriver`]:
//! sector-aligned encrypted I/O), [`amend`] (key slot add / erase). The cryptography itself is
//! in the `qimg-crypto` crate.
pub mod amend;
pub mod create;
pub mod driver;
pub mod header;
pub mod options;

pub use create::create;
pub use driver::LuksDriver;

/// Probe score as QEMU's `block_crypto_probe_luks`: 100 for the LUKS magic (any version, so
/// LUKS2 images are recognised and then opened by qimg's LUKS2 reader).
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 8 && first[..6] == qimg_crypto::luks1::header::MAGIC {
        100
    } else {
        0
    }
}
