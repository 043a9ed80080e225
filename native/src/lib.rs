//! qimg's N-API boundary (placeholder while the skeleton builds).
use napi_derive::napi;

/// Version of the native core.
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
