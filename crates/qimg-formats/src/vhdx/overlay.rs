//! A read-only view of the image file with a dirty log replayed in memory: QEMU refuses to open
//! such an image read-only; qimg reads it as it will be after replay and leaves the file alone.
use super::log::{LogOp, Replay, SECTOR};
use qimg_core::storage::DataRun;
use qimg_core::{Error, ErrorCode, Result, Storage};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The file plus the replayed sectors and zeroed ranges.
#[derive(Debug)]
pub struct ReplayOverlay {
    /// The file, never written.
    inner: Arc<dyn Storage>,
    /// Zeroed ranges (offset, length), applied before `sectors`.
    zeros: Vec<(u64, u64)>,
    /// Replayed sectors by file offset (later entries win).
    sectors: BTreeMap<u64, Box<[u8]>>,
    /// The file's size after replay.
    size: u64,
}

impl ReplayOverlay {
    /// The view of `inner` after `r`.
    pub fn new(inner: Arc<dyn Storage>, r: &Replay) -> Result<Self> {
        let file_size = inner.size()?;
        super::log::check_length(file_size, r)?;
        let mut zeros = Vec::new();
        let mut sectors = BTreeMap::new();
        let mut size = file_size.max(r.last_file_offset);
        for op in &r.ops {
            match op {
                LogOp::Data { offset, sector } => {
                    sectors.insert(*offset, sector.clone());
                    size = size.max(offset + SECTOR);
                }
                LogOp::Zero { offset, length } => {
                    let keys: Vec<u64> = sectors
                        .range(*offset..offset + length)
                        .map(|(k, _)| *k)
                        .collect();
                    for k in keys {
                        sectors.remove(&k);
                    }
                    zeros.push((*offset, *length));
                    size = size.max(offset + length);
                }
            }
        }
        Ok(ReplayOverlay {
            inner,
            zeros,
            sectors,
            size,
        })
    }

    fn refuse(&self) -> Error {
        Error::new(
            ErrorCode::ReadOnly,
            "the image has a dirty log replayed in memory only; open it read-write to replay it",
        )
        .with_path(self.inner.name())
    }
}

impl Storage for ReplayOverlay {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for &(zo, zl) in &self.zeros {
            let (s, e) = (zo.max(offset), (zo + zl).min(end));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize].fill(0);
            }
        }
        let first = offset - offset % SECTOR;
        for (&so, sec) in self.sectors.range(first..end) {
            let (s, e) = (so.max(offset), (so + SECTOR).min(end));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&sec[(s - so) as usize..(e - so) as usize]);
            }
        }
        Ok(())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<()> {
        Err(self.refuse())
    }

    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn truncate(&self, _size: u64) -> Result<()> {
        Err(self.refuse())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn discard(&self, _offset: u64, _length: u64) -> Result<()> {
        Err(self.refuse())
    }

    fn write_zeroes(&self, _offset: u64, _length: u64, _may_unmap: bool) -> Result<()> {
        Err(self.refuse())
    }

    fn allocate(&self, _offset: u64, _length: u64) -> Result<()> {
        Err(self.refuse())
    }

    fn allocated_bytes(&self) -> Result<u64> {
        self.inner.allocated_bytes()
    }

    fn data_run(&self, offset: u64, length: u64) -> Result<DataRun> {
        // Replayed ranges count as data; elsewhere the file decides.
        let touched = self.sectors.range(..offset + length).next_back().is_some()
            || self
                .zeros
                .iter()
                .any(|&(o, l)| o < offset + length && o + l > offset);
        if touched {
            return Ok(DataRun {
                data: true,
                length: length.max(1),
            });
        }
        self.inner.data_run(offset, length)
    }

    fn read_only(&self) -> bool {
        true
    }
}
