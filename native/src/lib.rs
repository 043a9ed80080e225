//! qimg's N-API boundary: the only Rust that knows Node.
//!
//! Coarse calls only: an image handle ([`image::NativeImage`]) with async range operations, image
//! creation, and whole-range jobs (copy, compare) that run on libuv's thread pool. Errors cross as
//! data (see [`error`]) and are unwrapped in one TypeScript function (`ts/native.ts`).
pub mod bitmap;
pub mod cancel;
pub mod chain_ops;
pub mod create;
pub mod error;
pub mod image;
pub mod jobs;
pub mod nbd;
pub mod nvme;
pub mod serve;
pub mod snapshot;
pub mod work;

use napi_derive::napi;

/// Version of the native core.
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
