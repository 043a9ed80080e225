//! Bochs "growing" redolog images (bximage `-imgmode=growing`), read-only as in QEMU.
//!
//! Roles as in every format folder: [`header`] (the 512-byte header and QEMU's bounds),
//! [`mapping`] (catalog and per-extent sector bitmaps) and [`driver`]. The other redolog
//! subtypes ("Undoable", "Volatile") are refused with `ERR_QIMG_UNSUPPORTED`; files without the
//! magic (bximage flat images) are not Bochs images (`ERR_QIMG_WRONG_FORMAT`).
pub mod driver;
pub mod header;
pub mod mapping;

pub use driver::BochsDriver;

/// Probe score as QEMU's: 100 for a growing redolog, 0 otherwise.
pub fn probe(first: &[u8]) -> u32 {
    if header::is_growing(first) {
        100
    } else {
        0
    }
}
