//! qimg core: the types every layer shares.
//!
//! - [`error`]: the stable error codes (`ERR_QIMG_*`) that cross into JavaScript.
//! - [`storage`]: the protocol layer trait (bytes of a host file, device or remote export).
//! - [`file`]: the `file` protocol on a POSIX file, with QEMU-compatible image locks ([`lock`]).
//! - [`nbd`]: the `nbd` protocol: an NBD client as a storage (negotiation, transmission).
//! - [`nbd_server`]: the NBD server (qemu-nbd's role) exporting an opened image.
//! - [`driver`]: the format layer trait (guest ranges mapped onto a storage) and block status.
//! - [`zero`]: fast zero detection used by convert and write-zeroes detection.
//! - [`bitmap`]: persistent dirty bitmaps (list, actions, contents).
//! - [`chain`]: generic helpers over a driver and its backing chain (map extents).
//! - [`copy`]: the convert/compare/commit chunk loops; [`rebase`]: the safe-rebase chunk loop.
pub mod bitmap;
pub mod chain;
pub mod copy;
pub mod direct;
pub mod driver;
pub mod error;
pub mod file;
pub mod lock;
pub mod nbd;
pub mod nbd_server;
pub mod rebase;
pub mod snapshot;
pub mod storage;
pub mod zero;

pub use bitmap::{BitmapAction, BitmapData, BitmapInfo};
pub use driver::{
    BlockDriver, CheckReport, CompressedCluster, DriverInfo, LayerExtent, LayerStatus, RepairMode,
};
pub use error::{Error, ErrorCode, Result};
pub use snapshot::{SnapshotInfo, SnapshotSelector};
pub use storage::Storage;
