//! Errors with stable codes.
//!
//! Every failure that reaches JavaScript carries one [`ErrorCode`] (rendered as `ERR_QIMG_…`),
//! a human message, the path and offset it concerns where known, and the OS errno as the cause.
use std::fmt;

/// Stable error codes; the string forms are part of the public API and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An OS-level I/O failure (`errno` is set).
    Io,
    /// The image's metadata is inconsistent or hostile (a bound was exceeded, a pointer is out of range).
    Corrupt,
    /// A valid image uses a feature this build does not implement (yet).
    Unsupported,
    /// A caller-supplied option or argument is invalid.
    InvalidArgument,
    /// Another process holds a conflicting image lock.
    Locked,
    /// A file or object does not exist.
    NotFound,
    /// A write was attempted on a read-only image.
    ReadOnly,
    /// An access beyond the end of the image.
    OutOfRange,
    /// The operation was cancelled through an AbortSignal.
    Aborted,
    /// The image is not in the format that was asked for.
    WrongFormat,
    /// A bug in qimg (a panic caught at the boundary).
    Internal,
}

impl ErrorCode {
    /// The stable string form, as seen in JavaScript as `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Io => "ERR_QIMG_IO",
            ErrorCode::Corrupt => "ERR_QIMG_CORRUPT",
            ErrorCode::Unsupported => "ERR_QIMG_UNSUPPORTED",
            ErrorCode::InvalidArgument => "ERR_QIMG_INVALID_ARGUMENT",
            ErrorCode::Locked => "ERR_QIMG_LOCKED",
            ErrorCode::NotFound => "ERR_QIMG_NOT_FOUND",
            ErrorCode::ReadOnly => "ERR_QIMG_READ_ONLY",
            ErrorCode::OutOfRange => "ERR_QIMG_OUT_OF_RANGE",
            ErrorCode::Aborted => "ERR_QIMG_ABORTED",
            ErrorCode::WrongFormat => "ERR_QIMG_WRONG_FORMAT",
            ErrorCode::Internal => "ERR_QIMG_INTERNAL",
        }
    }
}

/// A qimg error: kind + context + source.
#[derive(Debug, Clone)]
pub struct Error {
    /// The stable code.
    pub code: ErrorCode,
    /// A message for people, in QEMU's wording where QEMU has one.
    pub message: String,
    /// The file or URI concerned, when known.
    pub path: Option<String>,
    /// The byte offset concerned (host or guest, as the message says), when known.
    pub offset: Option<u64>,
    /// The OS errno behind an I/O error.
    pub errno: Option<i32>,
    /// The NVMe completion status behind an error of the `nvme` protocol: (status code type,
    /// status code), as in the completion queue entry's status field.
    pub nvme_status: Option<(u8, u8)>,
}

/// Result alias used across qimg's crates.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            path: None,
            offset: None,
            errno: None,
            nvme_status: None,
        }
    }
    /// Corrupt or hostile metadata.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Corrupt, message)
    }
    /// An unsupported feature.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    /// An invalid argument or option.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    /// An I/O error from an OS error.
    pub fn io(message: impl Into<String>, err: &std::io::Error) -> Self {
        let errno = err.raw_os_error();
        let code = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            _ => ErrorCode::Io,
        };
        // QEMU's wording: "Could not open 'x': No such file or directory" (no "(os error 2)").
        let reason = match errno {
            Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
            None => err.to_string(),
        };
        Error {
            code,
            message: format!("{}: {}", message.into(), reason),
            path: None,
            offset: None,
            errno,
            nvme_status: None,
        }
    }
    /// Attach the path this error concerns (kept if already set).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.into());
        }
        self
    }
    /// Attach the offset this error concerns (kept if already set).
    pub fn with_offset(mut self, offset: u64) -> Self {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Self {
        Error::io("I/O error", &std::io::Error::from_raw_os_error(e as i32))
    }
}
