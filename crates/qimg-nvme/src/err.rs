//! Error helpers for the NVMe driver (errors are `qimg_core::Error`).
pub use qimg_core::{Error, ErrorCode, Result};

/// An I/O error from the current `errno`.
pub fn os_err(what: impl Into<String>) -> Error {
    Error::io(what, &std::io::Error::last_os_error())
}

/// A command that completed with a non-zero status: the error carries (SCT, SC).
pub fn status_err(what: &str, sct: u8, sc: u8) -> Error {
    let name = match (sct, sc) {
        (0, 0x01) => "Invalid Command Opcode",
        (0, 0x02) => "Invalid Field in Command",
        (0, 0x04) => "Data Transfer Error",
        (0, 0x06) => "Internal Error",
        (0, 0x0b) => "Invalid Namespace or Format",
        (0, 0x80) => "LBA Out of Range",
        (0, 0x81) => "Capacity Exceeded",
        (1, 0x01) => "Invalid Queue Identifier",
        (1, 0x02) => "Invalid Queue Size",
        (2, 0x80) => "Write Fault",
        (2, 0x81) => "Unrecovered Read Error",
        (2, 0x86) => "Access Denied",
        _ => "error",
    };
    let code = match (sct, sc) {
        (0, 0x80) => ErrorCode::OutOfRange,
        (0, 0x01) | (0, 0x02) => ErrorCode::Unsupported,
        _ => ErrorCode::Io,
    };
    let mut e = Error::new(
        code,
        format!("NVMe {what} failed: {name} (status code type {sct:#x}, status code {sc:#x})"),
    );
    e.nvme_status = Some((sct, sc));
    e
}
