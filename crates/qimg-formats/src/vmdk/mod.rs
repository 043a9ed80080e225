//! VMDK, VMware's virtual disk format, as QEMU's `vmdk` driver reads and writes it: the five
//! subformats qemu-img creates (monolithicSparse, monolithicFlat, twoGbMaxExtentSparse,
//! twoGbMaxExtentFlat, streamOptimized), parent links (`parentCID`, `parentFileNameHint`), and
//! both streamOptimized layouts (VMware's, with the directory in the footer, which qimg writes;
//! and QEMU's, with the directory in place).
//!
//! Roles as in every format folder: [`header`] (sparse extent header and stream markers),
//! [`descriptor`] (the text descriptor), [`mapping`] (grain directory and tables, batched
//! lookups and reads), [`alloc`] (grain allocation, compressed grains, metadata write-back),
//! [`check`], [`create`], and [`driver`] (the [`qimg_core::BlockDriver`] implementation).
pub mod alloc;
pub mod check;
pub mod create;
pub mod descriptor;
pub mod driver;
pub mod header;
pub mod mapping;

pub use create::create;
pub use driver::VmdkDriver;

/// Probe score as QEMU's `vmdk_probe`: 100 for the KDMV magic (or the old COWD one), 100 for a
/// text descriptor starting with "# Disk DescriptorFile", else 0.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 4 && (first[..4] == *b"KDMV" || first[..4] == *b"COWD") {
        return 100;
    }
    if first.starts_with(b"# Disk DescriptorFile") {
        return 100;
    }
    0
}
