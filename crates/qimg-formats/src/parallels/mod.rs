//! Parallels expandable images (v1 "WithoutFreeSpace" and v2 "WithouFreSpacExt"), read and
//! written as QEMU 7.2+ does.
//!
//! Roles as in every format folder: [`header`] (the 64-byte header and its bounds), [`mapping`]
//! (the BAT), [`alloc`] (clusters appended at the end, BAT written after the data), [`check`]
//! (QEMU's findings and repairs), [`create`], and [`driver`] (the [`qimg_core::BlockDriver`]).
//! The in-use marker is set while open read-write; an image left in use (or with a BAT that
//! points outside the data area or twice at one cluster) opens, but refuses writes until
//! `check -r all`. Images with a format extension (dirty bitmaps) open read-only.
pub mod alloc;
pub mod check;
pub mod create;
pub mod driver;
pub mod header;
pub mod mapping;

pub use create::create;
pub use driver::ParallelsDriver;

/// Probe score as QEMU's: 100 for either magic with version 2.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 64
        && (&first[..16] == header::MAGIC_V1 || &first[..16] == header::MAGIC_V2)
        && crate::bytes::le32(first, 16) == header::VERSION
    {
        100
    } else {
        0
    }
}
