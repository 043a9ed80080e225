//! `CancelFlag`: how a JavaScript `AbortSignal` reaches work already running on the thread pool.
//!
//! napi's own AbortSignal support only cancels a task that has not started; key derivation
//! (PBKDF2 / Argon2 on an untrusted LUKS header) runs for seconds once started. TypeScript creates
//! a `CancelFlag`, calls `cancel()` from the signal's `abort` listener, and passes the flag to the
//! native open; the derivation polls it and fails with `ERR_QIMG_ABORTED`.
use napi_derive::napi;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancel flag shared with native work.
#[napi]
#[derive(Default)]
pub struct CancelFlag {
    flag: Arc<AtomicBool>,
}

#[napi]
impl CancelFlag {
    /// A flag not yet set.
    #[napi(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the flag: work polling it stops at its next check.
    #[napi]
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether `cancel()` was called.
    #[napi(getter)]
    pub fn cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl CancelFlag {
    /// The shared flag, for Rust work.
    pub fn shared(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}
