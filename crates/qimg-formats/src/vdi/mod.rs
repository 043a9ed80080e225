//! VDI, VirtualBox's disk image format (version 1.1), as QEMU's `vdi` driver reads and writes it.
//!
//! Roles as in every format folder: [`header`] (the header and its bounds), [`mapping`] (the
//! block map, batched lookups), [`alloc`] (block allocation and crash-safe metadata write-back),
//! [`check`], [`create`] (dynamic and `static=on`), and [`driver`] (the
//! [`qimg_core::BlockDriver`] implementation). VDI has no backing files or snapshots here (QEMU
//! refuses images with link/parent UUIDs, and so does qimg).
pub mod alloc;
pub mod check;
pub mod create;
pub mod driver;
pub mod header;
pub mod mapping;

pub use create::create;
pub use driver::VdiDriver;

/// Probe score as QEMU's `vdi_probe`: 100 for the signature at 0x40, else 0.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 0x44 && first[0x40..0x44] == header::SIGNATURE.to_le_bytes() {
        100
    } else {
        0
    }
}
