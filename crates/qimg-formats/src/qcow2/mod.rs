//! qcow2, QEMU's copy-on-write format (versions 2 and 3).
//!
//! Roles as in every format folder: [`header`] (on-disk header, extensions, bounds), [`mapping`]
//! (L1/L2 entries and the L2 cache), [`alloc`] (refcounts and cluster allocation), [`check`],
//! [`create`], and [`driver`] (the [`qimg_core::BlockDriver`] implementation); [`backing`] changes
//! the backing reference and empties an image for `rebase` and `commit`; [`bitmap`] holds
//! persistent dirty bitmaps; [`snapshot`] (the snapshot table) and [`snapshot_ops`]
//! (create/apply/delete, copy-on-write of shared tables) internal snapshots; [`resize`] (shrink,
//! grow with preallocation) and [`amend`] (compat, lazy refcounts, refcount width); [`overlap`]
//! keeps guest writes off metadata; [`header_write`] rewrites the header cluster in place.
//!
//! Compressed clusters (zlib and zstd) are read, and overwritten by allocating a new cluster.
//! Extended L2 entries (32 subclusters per cluster) are decoded per subcluster; a write into a
//! cluster whose subclusters are not all allocated completes the whole cluster.
//! External data files hold guest data at its guest offset (not refcounted).
//! Legacy AES encryption (`crypt_method` 1) reads and writes through [`crypto`] given the key;
//! LUKS (`crypt_method` 2) is validated and refused with `ERR_QIMG_UNSUPPORTED` until wired up.
//! Unknown incompatible features are refused with `ERR_QIMG_UNSUPPORTED` rather than misread.
pub mod alloc;
pub mod amend;
pub mod backing;
pub mod bitmap;
pub mod check;
pub mod compress;
pub mod create;
pub mod crypto;
pub mod driver;
pub mod header;
pub mod header_write;
pub mod luks;
pub mod mapping;
pub mod overlap;
pub mod resize;
pub mod snapshot;
pub mod snapshot_ops;

pub use create::create;
pub use driver::Qcow2Driver;

/// Probe score: 100 for the qcow2 magic with version 2 or 3, as QEMU.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 8 && first[..4] == header::MAGIC.to_be_bytes() {
        let v = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
        if v == 2 || v == 3 {
            return 100;
        }
    }
    0
}
