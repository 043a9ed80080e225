//! VHD (Microsoft Virtual PC / Hyper-V "Virtual Hard Disk"), QEMU's `vpc` driver: dynamic and
//! fixed disks, read and written.
//!
//! Roles as in every format folder: [`header`] (footer, dynamic header, checksums, CHS geometry),
//! [`mapping`] (the BAT, batched lookups), [`alloc`] (block allocation and crash-safe BAT
//! write-back), [`create`] (`subformat=dynamic|fixed`, `force_size`), and [`driver`] (the
//! [`qimg_core::BlockDriver`] implementation). Like QEMU, there is no `check`; differencing disks
//! (a parent by name) are refused with `ERR_QIMG_UNSUPPORTED`.
pub mod alloc;
pub mod create;
pub mod driver;
pub mod header;
pub mod mapping;

pub use create::create;
pub use driver::VpcDriver;

/// Probe score as QEMU's `vpc_probe`: 100 for the "conectix" cookie at offset 0. Fixed disks
/// have their footer only at the end, so they probe as raw and need `-f vpc`, as in QEMU.
pub fn probe(first: &[u8]) -> u32 {
    if header::Footer::has_cookie(first) {
        100
    } else {
        0
    }
}
