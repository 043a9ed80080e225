//! The QED [`BlockDriver`]: the header, the need-check flag and the shared table engine.
//!
//! As QEMU: the need-check feature bit is written (and flushed) before the first allocating
//! write and cleared on close once everything is durable; a read-write open of an image that
//! still has it set runs the consistency check with repair first (read-only opens do not, so
//! a damaged image can still be read for recovery). Discard does nothing, as QEMU's qed.
//!
//! The repair after a crash runs before the first I/O of a read-write open rather than inside
//! `open` itself, so that `check -r` — which opens read-write, as QEMU's `BDRV_O_CHECK` open
//! does without the automatic repair — reports and fixes the findings itself, as qemu-img does.
use super::check;
use super::header::{self, QedHeader};
use super::mapping::QedTables;
use crate::l2map::{Geometry, TableMap};
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, CheckReport, DriverInfo, Error, ErrorCode, LayerExtent, RepairMode, Result,
    Storage,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// An opened QED image.
pub struct QedDriver {
    map: TableMap<QedTables>,
    header: Mutex<QedHeader>,
    read_only: bool,
    backing_file: Mutex<Option<String>>,
    closed: AtomicBool,
    /// Read-write open of an image with the need-check flag: repair before the first I/O.
    pending_repair: AtomicBool,
    /// Held while the pending repair runs, so concurrent first I/Os wait for it.
    repair_lock: Mutex<()>,
}

impl QedDriver {
    /// Open and validate a QED image; repairs it first if it was not closed cleanly and the
    /// open is read-write.
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let file_len = storage.size()?;
        let mut first = vec![0u8; header::HEADER_LEN];
        storage.read_at(&mut first, 0)?;
        let mut h = QedHeader::parse(&first, file_len)?;
        let cs = h.cluster_size;
        let backing_file = if h.features & header::F_BACKING_FILE != 0 {
            let mut name = vec![0u8; h.backing_filename_size as usize];
            storage.read_at(&mut name, h.backing_filename_offset as u64)?;
            Some(String::from_utf8_lossy(&name).into_owned())
        } else {
            None
        };
        if h.autoclear_features != 0 && !opts.read_only {
            h.autoclear_features = 0;
            storage.write_at(&h.encode(), 0)?;
            storage.flush()?;
        }
        let geo = Geometry {
            cluster_size: cs,
            l2_entries: h.table_entries(),
            l2_reserve: h.table_bytes(),
            l1_offset: h.l1_table_offset,
            l1_entries: h.table_entries(),
        };
        let end = file_len & !(cs - 1);
        let map = TableMap::load(
            storage,
            QedTables { header: h.clone() },
            geo,
            end,
            h.image_size,
        )?;
        let drv = QedDriver {
            map,
            header: Mutex::new(h),
            read_only: opts.read_only,
            backing_file: Mutex::new(backing_file),
            closed: AtomicBool::new(false),
            pending_repair: AtomicBool::new(false),
            repair_lock: Mutex::new(()),
        };
        if !opts.read_only && drv.hdr()?.features & header::F_NEED_CHECK != 0 {
            drv.pending_repair.store(true, Ordering::Release);
        }
        Ok(drv)
    }

    /// Run the repair a crash left pending (once), before any I/O.
    fn settle(&self) -> Result<()> {
        if !self.pending_repair.load(Ordering::Acquire) {
            return Ok(());
        }
        let _g = self
            .repair_lock
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "repair lock poisoned"))?;
        if self.pending_repair.load(Ordering::Acquire) {
            self.check_now(RepairMode::All)?;
            self.pending_repair.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// `check` proper.
    fn check_now(&self, repair: RepairMode) -> Result<CheckReport> {
        let fix = repair != RepairMode::None;
        if fix {
            self.writable()?;
        }
        self.map.flush()?;
        let h = self.hdr()?.clone();
        let (report, clean) = check::check(&self.map, &h, fix)?;
        if clean {
            self.clear_need_check()?;
        }
        Ok(report)
    }

    fn hdr(&self) -> Result<MutexGuard<'_, QedHeader>> {
        self.header
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "header lock poisoned"))
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::new(ErrorCode::ReadOnly, "Image is read-only"));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorCode::Internal, "image is closed"));
        }
        Ok(())
    }

    /// [`Self::writable`], then any pending repair.
    fn writable_settled(&self) -> Result<()> {
        self.writable()?;
        self.settle()
    }

    /// Write the header (with `features` updated) and flush it.
    fn store_header(&self, h: &QedHeader) -> Result<()> {
        self.map.storage().write_at(&h.encode(), 0)?;
        self.map.storage().flush()
    }

    /// Set the need-check flag on disk before the first allocation.
    fn mark_need_check(&self) -> Result<()> {
        let mut h = self.hdr()?;
        if h.features & header::F_NEED_CHECK == 0 {
            h.features |= header::F_NEED_CHECK;
            self.store_header(&h)?;
        }
        Ok(())
    }

    /// Clear the need-check flag once every change is durable.
    fn clear_need_check(&self) -> Result<()> {
        let mut h = self.hdr()?;
        if h.features & header::F_NEED_CHECK != 0 {
            self.map.storage().flush()?;
            h.features &= !header::F_NEED_CHECK;
            self.store_header(&h)?;
        }
        Ok(())
    }
}

impl BlockDriver for QedDriver {
    fn format_name(&self) -> &'static str {
        "qed"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        self.map.storage()
    }

    fn virtual_size(&self) -> u64 {
        self.map.virtual_size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.settle()?;
        self.map.read(offset, buf)
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable_settled()?;
        self.map.write(offset, buf, &mut || self.mark_need_check())
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_unmap: bool) -> Result<()> {
        self.writable_settled()?;
        self.map
            .write_zeroes(offset, length, &mut || self.mark_need_check())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.writable_settled()?;
        let vs = self.virtual_size();
        if offset.checked_add(length).is_none_or(|e| e > vs) {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                "discard beyond the image",
            ));
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        self.settle()?;
        self.map.block_status(offset, length)
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.settle()?;
        self.map.flush()
    }

    fn close(&self) -> Result<()> {
        if self.read_only || self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.settle()?;
        self.closed.store(true, Ordering::Release);
        self.map.flush()?;
        self.clear_need_check()
    }

    fn info(&self) -> Result<DriverInfo> {
        let h = self.hdr()?;
        Ok(DriverInfo {
            cluster_size: Some(h.cluster_size),
            // qemu-img info never reports QED's need-check flag as dirty.
            dirty: false,
            backing_file: self
                .backing_file
                .lock()
                .map_err(|_| Error::new(ErrorCode::Internal, "lock poisoned"))?
                .clone(),
            backing_format: (h.features & header::F_BACKING_FORMAT_NO_PROBE != 0
                && h.features & header::F_BACKING_FILE != 0)
                .then(|| "raw".to_string()),
            format_specific: None,
        })
    }

    fn check(&self, repair: RepairMode) -> Result<CheckReport> {
        // An explicit repair replaces the pending automatic one.
        if repair != RepairMode::None {
            self.pending_repair.store(false, Ordering::Release);
        }
        self.settle()?;
        self.check_now(repair)
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        self.writable_settled()?;
        let mut h = self.hdr()?;
        if !header::image_size_valid(new_size, h.cluster_size, h.table_size) {
            return Err(Error::invalid("Invalid image size specified"));
        }
        if new_size < h.image_size {
            return Err(Error::unsupported(
                "Shrinking images is currently not supported",
            ));
        }
        self.map.flush()?;
        h.image_size = new_size;
        self.store_header(&h)?;
        self.map.set_virtual_size(new_size)
    }

    fn set_backing_file(&self, name: Option<&str>, format: Option<&str>) -> Result<()> {
        self.writable_settled()?;
        self.map.flush()?;
        let mut h = self.hdr()?;
        h.features &= !(header::F_BACKING_FILE | header::F_BACKING_FORMAT_NO_PROBE);
        h.backing_filename_offset = 0;
        h.backing_filename_size = 0;
        if let Some(n) = name {
            if n.len() as u64 > h.header_size * h.cluster_size - header::HEADER_LEN as u64 {
                return Err(Error::invalid("Backing file name too long"));
            }
            h.features |= header::F_BACKING_FILE;
            if format == Some("raw") {
                h.features |= header::F_BACKING_FORMAT_NO_PROBE;
            }
            h.backing_filename_offset = header::HEADER_LEN as u32;
            h.backing_filename_size = n.len() as u32;
            self.map
                .storage()
                .write_at(n.as_bytes(), header::HEADER_LEN as u64)?;
            self.map.storage().flush()?;
        }
        self.store_header(&h)?;
        *self
            .backing_file
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "lock poisoned"))? =
            name.map(String::from);
        Ok(())
    }

    /// QEMU's qed cannot empty an image and `qemu-img commit` ignores that, leaving the top
    /// image's (now committed) data in place; qimg does the same.
    fn make_empty(&self) -> Result<()> {
        self.writable_settled()
    }

    fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        self.map.backing()
    }

    fn set_backing(&self, backing: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        self.map.set_backing(backing)
    }
}
