//! QED, the QEMU Enhanced Disk format: a header cluster, an L1 table and L2 tables of
//! `table_size` clusters each, data clusters appended at the end of the file.
//!
//! Roles as in every format folder: [`header`] (on-disk header and bounds), [`mapping`] (table
//! entries, on the shared [`crate::l2map`] engine), [`check`] (QEMU's `qed_check`, also run on a
//! read-write open of an image left with the need-check flag), [`create`], and [`driver`].
pub mod check;
pub mod create;
pub mod driver;
pub mod header;
pub mod mapping;

pub use create::create;
pub use driver::QedDriver;

/// Probe score: 100 for the `QED\0` magic, as QEMU's `bdrv_qed_probe`.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 4 && first[..4] == header::MAGIC.to_le_bytes() {
        100
    } else {
        0
    }
}
