//! The raw driver: every call forwards to the storage at the same offset.
//!
//! Block status comes from the storage's holes (`SEEK_DATA`/`SEEK_HOLE` for files) and matches
//! `qemu-img map --output=json -f raw` (checked on qemu-img 10.0): data runs are
//! `data: true, zero: false`; holes are `data: false, zero: true`, both `present: true` with
//! `offset` equal to the guest offset — so a hole is [`LayerStatus::Zero`] *with* its host
//! offset, not [`LayerStatus::Unallocated`].
use crate::options::OpenOptions;
use qimg_core::storage::DataRun;
use qimg_core::{BlockDriver, DriverInfo, Error, LayerExtent, LayerStatus, Result, Storage};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An opened raw image.
pub struct RawDriver {
    /// The bytes of the image.
    storage: Arc<dyn Storage>,
    /// Virtual size: the storage size at open, changed by [`BlockDriver::resize`].
    size: AtomicU64,
    /// Refuse every write.
    read_only: bool,
}

impl RawDriver {
    /// Open `storage` as a raw image. The virtual size is the storage size rounded up to a
    /// multiple of 512, as QEMU's block layer counts sizes in sectors (a 1000-byte file is a
    /// 1024-byte image whose last 24 bytes read as zeros and map as a hole).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let size = storage
            .size()?
            .checked_next_multiple_of(512)
            .ok_or_else(|| Error::corrupt("Image size is too large"))?;
        Ok(RawDriver {
            storage,
            size: AtomicU64::new(size),
            read_only: opts.read_only,
        })
    }

    /// Refuse ranges that end past the virtual size (`OutOfRange`).
    fn bounds(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.virtual_size();
        crate::guard::in_range(offset, len, size, self.storage.name())
    }

    /// Refuse writes on a read-only open (`ReadOnly`).
    fn writable(&self) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())
    }
}

impl BlockDriver for RawDriver {
    fn format_name(&self) -> &'static str {
        "raw"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        self.storage.read_at(buf, offset)
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        self.bounds(offset, buf.len() as u64)?;
        self.storage.write_at(buf, offset)
    }

    fn write_fua(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        self.bounds(offset, buf.len() as u64)?;
        self.storage.write_at_fua(buf, offset)
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.writable()?;
        self.bounds(offset, length)?;
        self.storage.write_zeroes(offset, length, may_unmap)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.writable()?;
        self.bounds(offset, length)?;
        // As QEMU's raw driver: a discard passes down as a discard (NBD: `NBD_CMD_TRIM`).
        self.storage.trim(offset, length)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        self.bounds(offset, length)?;
        if length == 0 {
            return Ok(Vec::new());
        }
        // A hole in the file reads as zeros but is still this layer's answer (QEMU reports
        // present=true, zero=true, data=false with the host offset).
        let DataRun { data, length: run } = self.storage.data_run(offset, length)?;
        let run = run.clamp(1, length);
        let status = if data {
            LayerStatus::Data {
                host_offset: Some(offset),
                compressed: false,
                reads_zero: false,
            }
        } else {
            LayerStatus::Zero {
                host_offset: Some(offset),
            }
        };
        Ok(vec![LayerExtent {
            start: offset,
            length: run,
            status,
        }])
    }

    fn flush(&self) -> Result<()> {
        self.storage.flush()
    }

    fn close(&self) -> Result<()> {
        self.storage.flush()
    }

    fn info(&self) -> Result<DriverInfo> {
        Ok(DriverInfo::default())
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        self.writable()?;
        self.storage.truncate(new_size)?;
        self.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }

    fn truncate(&self, new_size: u64, prealloc: &str) -> Result<()> {
        let old = self.virtual_size();
        let fill = match prealloc {
            "off" => None,
            "falloc" => Some(false),
            "full" => Some(true),
            _ => {
                return Err(Error::unsupported(format!(
                    "Unsupported preallocation mode: {prealloc}"
                )))
            }
        };
        self.resize(new_size)?;
        if let (Some(zeros), true) = (fill, new_size > old) {
            // As file-posix: reserve the new tail; `full` also writes it.
            self.storage.allocate(old, new_size - old)?;
            if zeros {
                crate::qcow2::resize::write_zero_bytes(self.storage.as_ref(), old, new_size - old)?;
            }
            self.storage.flush()?;
        }
        Ok(())
    }
}
