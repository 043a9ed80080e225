//! Pieces shared by the read-only formats (bochs, cloop, dmg): write refusal, the read-only
//! `BlockDriver` methods, and the block status QEMU reports for drivers without one (all data).
use qimg_core::{Error, ErrorCode, LayerExtent, LayerStatus, Result};

/// The error every write path returns.
pub fn refuse_write(format: &str, path: &str) -> Error {
    Error::new(
        ErrorCode::ReadOnly,
        format!("Driver '{format}' only supports reading; the image cannot be written"),
    )
    .with_path(path)
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

/// The `BlockDriver` methods every read-only format shares: the three write paths refused, block
/// status as one data extent over `[offset, offset+length)` within `self.virtual_size()`, and no-op
/// flush/close/info. Used inside `impl BlockDriver for …` as
/// `read_only_methods!("bochs", |s| s.h.disk);` (the closure names the receiver for `self.virtual_size()`).
macro_rules! read_only_methods {
    ($format:literal) => {
        fn write(&self, _offset: u64, _buf: &[u8]) -> qimg_core::Result<()> {
            Err($crate::readonly::refuse_write($format, self.storage.name()))
        }

        fn write_zeroes(
            &self,
            _offset: u64,
            _length: u64,
            _may_unmap: bool,
        ) -> qimg_core::Result<()> {
            Err($crate::readonly::refuse_write($format, self.storage.name()))
        }

        fn discard(&self, _offset: u64, _length: u64) -> qimg_core::Result<()> {
            Err($crate::readonly::refuse_write($format, self.storage.name()))
        }

        fn block_status(
            &self,
            offset: u64,
            length: u64,
        ) -> qimg_core::Result<Vec<qimg_core::LayerExtent>> {
            $crate::guard::in_range(offset, length, self.virtual_size(), self.storage.name())?;
            Ok($crate::readonly::whole_data(offset, length))
        }

        fn flush(&self) -> qimg_core::Result<()> {
            Ok(())
        }

        fn close(&self) -> qimg_core::Result<()> {
            Ok(())
        }

        fn info(&self) -> qimg_core::Result<qimg_core::DriverInfo> {
            Ok(qimg_core::DriverInfo::default())
        }
    };
}
pub(crate) use read_only_methods;
