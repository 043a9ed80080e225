//! Pieces shared by the read-only formats (bochs, cloop, dmg): write refusal, range checks and
//! the block status QEMU reports for drivers without one (the whole range is data, no offset).
use qimg_core::{Error, ErrorCode, LayerExtent, LayerStatus, Result};

/// The error every write path returns.
pub fn refuse_write(format: &str, path: &str) -> Error {
    Error::new(
        ErrorCode::ReadOnly,
        format!("Driver '{format}' only supports reading; the image cannot be written"),
    )
    .with_path(path)
}

/// Refuse `[offset, offset+len)` past `size`.
pub fn bounds(offset: u64, len: u64, size: u64, path: &str) -> Result<()> {
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(Error::new(
            ErrorCode::OutOfRange,
            format!("range {offset}+{len} is beyond the end of the image ({size} bytes)"),
        )
        .with_path(path));
    }
    Ok(())
}

/// One extent of data without a host offset, as `qemu-img map` shows these formats.
pub fn whole_data(offset: u64, length: u64) -> Vec<LayerExtent> {
    if length == 0 {
        return Vec::new();
    }
    vec![LayerExtent {
        start: offset,
        length,
        status: LayerStatus::Data {
            host_offset: None,
            compressed: false,
            reads_zero: false,
        },
    }]
}

/// Refuse a writable open of a read-only format, in qemu-img's words ("Image is read-only").
pub fn refuse_rw_open(_format: &str, read_only: bool, path: &str) -> Result<()> {
    if read_only {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::ReadOnly,
            format!("Could not open '{path}': Image is read-only"),
        )
        .with_path(path))
    }
}
