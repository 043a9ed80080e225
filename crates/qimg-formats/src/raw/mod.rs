//! The raw format: guest bytes are the storage's bytes, one to one.
//!
//! Roles as in every format folder: `driver` (the [`qimg_core::BlockDriver`] impl) and `create`.
//! Raw has no header, mapping tables or check.
mod create;
mod driver;

pub use create::create;
pub use driver::RawDriver;

/// Probe score: raw matches anything, weakest of all (TypeScript never picks it for writing).
pub fn probe(_first_bytes: &[u8]) -> u32 {
    1
}
