//! One generic libuv task: a closure run off the main thread whose result resolves a Promise.
//!
//! Every async export returns `AsyncTask<Work<T>>` and declares its TypeScript return type with
//! `ts_return_type` (the generator cannot see through the generic).
use napi::bindgen_prelude::*;

/// A boxed job producing `T` or a core error.
pub type Job<T> = Box<dyn FnOnce() -> qimg_core::Result<T> + Send>;

/// The task behind every async export.
pub struct Work<T: Send + 'static> {
    job: Option<Job<T>>,
}

impl<T: Send + 'static> Work<T> {
    /// Wrap a closure.
    pub fn new(f: impl FnOnce() -> qimg_core::Result<T> + Send + 'static) -> Self {
        Work {
            job: Some(Box::new(f)),
        }
    }
}

/// Build an `AsyncTask` from a closure, with an optional AbortSignal.
pub fn spawn<T: Send + ToNapiValue + TypeName + 'static>(
    signal: Option<AbortSignal>,
    f: impl FnOnce() -> qimg_core::Result<T> + Send + 'static,
) -> AsyncTask<Work<T>> {
    AsyncTask::with_optional_signal(Work::new(f), signal)
}

impl<T: Send + ToNapiValue + TypeName + 'static> Task for Work<T> {
    type Output = T;
    type JsValue = T;

    fn compute(&mut self) -> Result<T> {
        let job = self
            .job
            .take()
            .ok_or_else(|| Error::from_reason("task ran twice"))?;
        // A panic in a driver must not take the host process down: report it as an error.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
            Ok(r) => r.map_err(crate::error::to_napi),
            Err(_) => Err(crate::error::to_napi(qimg_core::Error::new(
                qimg_core::ErrorCode::Internal,
                "internal error: a native operation panicked (this is a bug in qimg)",
            ))),
        }
    }

    fn resolve(&mut self, _env: Env, output: T) -> Result<T> {
        Ok(output)
    }
}
