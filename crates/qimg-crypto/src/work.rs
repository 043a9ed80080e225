//! Bounds on key-derivation work: images are untrusted, and a hostile header can ask for 2^32
//! PBKDF2 iterations or gigabytes of Argon2 memory. Every derivation checks a [`WorkLimits`]
//! before it starts and polls it while it runs.
use qimg_core::{Error, ErrorCode, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default cap on PBKDF2 iterations per derivation: cryptsetup's 2-second benchmark gives about
/// 1–4 million on current CPUs, so 20 million leaves headroom for slow-hash images made on fast
/// machines while keeping one derivation within seconds.
pub const DEFAULT_MAX_PBKDF2_ITERATIONS: u32 = 20_000_000;
/// Default cap on Argon2 memory (KiB): cryptsetup's maximum is 4 GiB; qimg takes 1 GiB.
pub const DEFAULT_MAX_ARGON2_MEMORY_KIB: u32 = 1 << 20;
/// Default cap on Argon2 passes.
pub const DEFAULT_MAX_ARGON2_TIME: u32 = 64;
/// Default wall-clock budget for unlocking one image (every keyslot tried).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Limits and cancellation for key derivation.
#[derive(Debug, Clone)]
pub struct WorkLimits {
    /// Largest PBKDF2 iteration count accepted from a header.
    pub max_pbkdf2_iterations: u32,
    /// Largest Argon2 memory cost (KiB) accepted from a header.
    pub max_argon2_memory_kib: u32,
    /// Largest Argon2 time cost accepted from a header.
    pub max_argon2_time: u32,
    /// Give up (with `ERR_QIMG_ABORTED`) once this instant has passed.
    pub deadline: Option<Instant>,
    /// Give up (with `ERR_QIMG_ABORTED`) once this flag is set, e.g. by an AbortSignal.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for WorkLimits {
    fn default() -> Self {
        Self {
            max_pbkdf2_iterations: DEFAULT_MAX_PBKDF2_ITERATIONS,
            max_argon2_memory_kib: DEFAULT_MAX_ARGON2_MEMORY_KIB,
            max_argon2_time: DEFAULT_MAX_ARGON2_TIME,
            deadline: Some(Instant::now() + DEFAULT_BUDGET),
            cancel: None,
        }
    }
}

impl WorkLimits {
    /// No caps and no deadline: for images qimg itself is creating.
    pub fn unlimited() -> Self {
        Self {
            max_pbkdf2_iterations: u32::MAX,
            max_argon2_memory_kib: u32::MAX,
            max_argon2_time: u32::MAX,
            deadline: None,
            cancel: None,
        }
    }

    /// Fail if the work was cancelled or ran out of time.
    pub fn poll(&self) -> Result<()> {
        if let Some(c) = &self.cancel {
            if c.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorCode::Aborted, "Key derivation cancelled"));
            }
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return Err(Error::new(
                    ErrorCode::Aborted,
                    "Key derivation exceeded its time budget",
                ));
            }
        }
        Ok(())
    }

    /// Refuse an iteration count above the cap before any work starts.
    pub fn check_pbkdf2(&self, iterations: u32) -> Result<()> {
        if iterations > self.max_pbkdf2_iterations {
            return Err(Error::unsupported(format!(
                "PBKDF2 iteration count {iterations} exceeds the limit of {}",
                self.max_pbkdf2_iterations
            )));
        }
        Ok(())
    }
}
