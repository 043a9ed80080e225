//! The Parallels [`BlockDriver`]: BAT lookups for reads and block status, cluster allocation at
//! the end of the data area for writes, the in-use marker while open read-write.
//!
//! Ordering: new clusters are written first, the BAT sectors that point at them only on flush,
//! after the data is durable (data → flush → BAT → flush). The in-use marker is set (and flushed)
//! before the first write and cleared on close, after which the file is cut at the end of the
//! last used cluster, as QEMU does.
use super::alloc;
use super::header::{Header, HEADER_SIZE, IN_USE, SECTOR};
use super::mapping::Bat;
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, CheckReport, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, RepairMode,
    Result, Storage,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// Mutable state, behind one mutex.
pub(super) struct State {
    /// The header as on disk (in_use reflects what was written).
    pub h: Header,
    /// The BAT.
    pub bat: Bat,
    /// Host byte offset where the next cluster is allocated.
    pub data_end: u64,
    /// The image needs `check -r all` before it may be written (unclean close, BAT entries out
    /// of the data area or shared by two clusters): writes are refused until then.
    pub needs_repair: bool,
    /// The in-use marker has been written by this open.
    pub marked: bool,
    /// Closed: no more I/O.
    pub closed: bool,
}

/// An opened Parallels image.
pub struct ParallelsDriver {
    /// The image file.
    pub(super) storage: Arc<dyn Storage>,
    /// Refuse writes.
    pub(super) read_only: bool,
    /// Header, BAT, allocation cursor.
    pub(super) state: Mutex<State>,
}

impl ParallelsDriver {
    /// Open `storage` as a Parallels image (v1 or v2).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let file_size = storage.size()?;
        let mut b = [0u8; HEADER_SIZE as usize];
        storage.read_at(&mut b, 0)?;
        let h = Header::parse(&b, file_size).map_err(|e| e.with_path(storage.name()))?;
        if !opts.read_only && h.ext_off != 0 {
            return Err(Error::unsupported(
                "parallels: images with a format extension (dirty bitmaps) are read-only in qimg",
            )
            .with_path(storage.name()));
        }
        let bat = Bat::load(&*storage, &h)?;
        let data_end = alloc::data_end(&h, &bat);
        let needs_repair = !opts.read_only && alloc::needs_repair(&h, &bat, file_size);
        Ok(ParallelsDriver {
            storage,
            read_only: opts.read_only,
            state: Mutex::new(State {
                h,
                bat,
                data_end,
                needs_repair,
                marked: false,
                closed: false,
            }),
        })
    }

    /// Lock the state; refuse I/O after close.
    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return Err(Error::invalid("the image is closed").with_path(self.storage.name()));
        }
        Ok(st)
    }

    /// Refuse ranges past the virtual size.
    fn bounds(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.virtual_size();
        crate::guard::in_range(offset, len, size, self.storage.name())
    }

    /// Refuse writes on read-only opens and on images that need repair; set the in-use marker.
    fn writable(&self, st: &mut State) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())?;
        if st.needs_repair {
            return Err(Error::corrupt(
                "parallels: Image was not closed correctly or its BAT is inconsistent; \
                 repair it with 'qemu-img check -r all'",
            )
            .with_path(self.storage.name()));
        }
        if !st.marked {
            st.h.in_use = IN_USE;
            self.storage.write_at(&st.h.encode(), 0)?;
            self.storage.flush()?;
            st.marked = true;
        }
        Ok(())
    }

    /// Run `f(guest_offset, cluster_index, offset_in_cluster, length)` over the clusters of a range.
    fn for_clusters(
        cs: u64,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let idx = pos / cs;
            let within = pos % cs;
            let n = (cs - within).min(end - pos);
            f(pos, idx, within, n)?;
            pos += n;
        }
        Ok(())
    }

    /// Zero (whole clusters: unmap) a guest range.
    fn zero_range(&self, offset: u64, length: u64) -> Result<()> {
        let mut st = self.lock()?;
        self.writable(&mut st)?;
        let st = &mut *st;
        let cs = st.h.cluster_size();
        Self::for_clusters(cs, offset, length, |_, idx, within, n| {
            let Some(host) = st.bat.host(&st.h, idx) else {
                return Ok(());
            };
            if n == cs {
                st.bat.set(&st.h, idx as usize, 0)?;
                Ok(())
            } else {
                self.storage.write_zeroes(host + within, n, false)
            }
        })
    }
}

impl BlockDriver for ParallelsDriver {
    fn format_name(&self) -> &'static str {
        "parallels"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.h.nb_sectors * SECTOR
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        // Look the clusters up under the lock, then read without it (reads run in parallel;
        // clusters are never freed for reuse while open, so a mapping stays valid).
        let mut plan = Vec::new();
        {
            let st = self.lock()?;
            let cs = st.h.cluster_size();
            Self::for_clusters(cs, offset, buf.len() as u64, |pos, idx, within, n| {
                let host = st.bat.host(&st.h, idx).map(|h| h + within);
                match plan.last_mut() {
                    Some((_, len, Some(prev))) if host == Some(*prev + *len) => *len += n,
                    Some((_, len, None)) if host.is_none() => *len += n,
                    _ => plan.push((pos, n, host)),
                }
                Ok(())
            })?;
        }
        for (pos, n, host) in plan {
            let dst = &mut buf[(pos - offset) as usize..(pos - offset + n) as usize];
            match host {
                Some(h) => self.storage.read_at(dst, h)?,
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        let mut st = self.lock()?;
        self.writable(&mut st)?;
        let st = &mut *st;
        let cs = st.h.cluster_size();
        Self::for_clusters(cs, offset, buf.len() as u64, |pos, idx, within, n| {
            let src = &buf[(pos - offset) as usize..(pos - offset + n) as usize];
            match st.bat.host(&st.h, idx) {
                Some(host) => self.storage.write_at(src, host + within),
                None => alloc::allocate(&*self.storage, st, idx, within, src),
            }
        })
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_unmap: bool) -> Result<()> {
        self.bounds(offset, length)?;
        self.zero_range(offset, length)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.bounds(offset, length)?;
        self.zero_range(offset, length)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        self.bounds(offset, length)?;
        let st = self.lock()?;
        let cs = st.h.cluster_size();
        let mut out: Vec<LayerExtent> = Vec::new();
        Self::for_clusters(cs, offset, length, |pos, idx, within, n| {
            let status = match st.bat.host(&st.h, idx) {
                Some(host) => LayerStatus::Data {
                    host_offset: Some(host + within),
                    compressed: false,
                    reads_zero: false,
                },
                None => LayerStatus::Unallocated,
            };
            if let Some(last) = out.last_mut() {
                let joins = match (last.status, status) {
                    (LayerStatus::Unallocated, LayerStatus::Unallocated) => true,
                    (
                        LayerStatus::Data {
                            host_offset: Some(a),
                            ..
                        },
                        LayerStatus::Data {
                            host_offset: Some(b),
                            ..
                        },
                    ) => a + last.length == b,
                    _ => false,
                };
                if joins {
                    last.length += n;
                    return Ok(());
                }
            }
            out.push(LayerExtent {
                start: pos,
                length: n,
                status,
            });
            Ok(())
        })?;
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        alloc::flush(&*self.storage, &mut st)
    }

    fn close(&self) -> Result<()> {
        let mut st = self.lock()?;
        alloc::flush(&*self.storage, &mut st)?;
        if st.marked && !st.needs_repair {
            // As QEMU: cut preallocated or freed space after the last used cluster, then clear
            // the marker.
            let end = alloc::used_end(&st.h, &st.bat);
            if self.storage.size()? > end {
                self.storage.truncate(end)?;
            }
            st.h.in_use = 0;
            self.storage.write_at(&st.h.encode(), 0)?;
            self.storage.flush()?;
        }
        st.closed = true;
        Ok(())
    }

    fn info(&self) -> Result<DriverInfo> {
        Ok(DriverInfo::default())
    }

    fn check(&self, repair: RepairMode) -> Result<CheckReport> {
        let mut st = self.lock()?;
        if repair != RepairMode::None && self.read_only {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                "the image is opened read-only",
            ));
        }
        super::check::check(&*self.storage, &mut st, repair)
    }
}
