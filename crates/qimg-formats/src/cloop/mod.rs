//! cloop V2.0 compressed loopback images (as `create_compressed_fs` writes them), read-only as
//! in QEMU.
//!
//! Roles as in every format folder: [`header`] (block size, block count and the offset table,
//! with QEMU's bounds: blocks ≤ 64 MiB, multiples of 512, monotonic offsets, compressed blocks ≤
//! twice the block size), [`mapping`] (bounded zlib inflate of one block) and [`driver`].
pub mod driver;
pub mod header;
pub mod mapping;

pub use driver::CloopDriver;

/// Probe score as QEMU's: 2 when the head matches the V2.0 preamble (as far as it goes).
pub fn probe(first: &[u8]) -> u32 {
    let n = header::MAGIC_V2.len().min(first.len());
    if n > 0 && first[..n] == header::MAGIC_V2[..n] {
        2
    } else {
        0
    }
}
