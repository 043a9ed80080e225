//! Request checks every format driver makes before touching its mapping: the guest range lies
//! within the virtual size, and a write comes through a writable open.
use qimg_core::{Error, ErrorCode, Result};

/// Refuse `[offset, offset+len)` when it ends past `size` (`OutOfRange`), naming the image `path`.
pub fn in_range(offset: u64, len: u64, size: u64, path: &str) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(Error::new(
            ErrorCode::OutOfRange,
            format!("range {offset}+{len} is beyond the end of the image ({size} bytes)"),
        )
        .with_path(path));
    }
    Ok(())
}

/// Refuse a write on a read-only open (`ReadOnly`), naming the image `path`.
pub fn writable(read_only: bool, path: &str) -> Result<()> {
    if read_only {
        return Err(
            Error::new(ErrorCode::ReadOnly, "the image is opened read-only").with_path(path),
        );
    }
    Ok(())
}
