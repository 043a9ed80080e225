//! The VHDX driver: opens the header section, handles the log (replayed into the file on a
//! writable open, as QEMU does; replayed in memory on a read-only open, where QEMU refuses),
//! reads and writes payload blocks through the BAT, and reads differencing images through the
//! parent the graph builder attaches.
//!
//! Block status: QEMU's vhdx driver has none (everything reads as data to `qemu-img map`); qimg
//! reports ZERO/NOT_PRESENT blocks as zeros (or, in differencing images, unallocated, so the
//! parent decides), which lets convert skip them.
use super::alloc::{allocate_block, MetaState};
use super::header::{
    choose_header, not_vhdx, RegionTable, FILE_SIGNATURE, HEADER_OFFSETS, HEADER_SIZE,
    REGION_OFFSETS, REGION_SIZE,
};
use super::log::{self, Replay};
use super::mapping::{Bat, Kind, FULLY_PRESENT};
use super::metadata::Metadata;
use super::overlay::ReplayOverlay;
use super::{Guid, MIB};
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, CheckReport, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, RepairMode,
    Result, Storage,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest BAT region qimg loads (QEMU: 64 TiB / 1 MiB blocks × 8 bytes ≈ 512 MiB; qimg is the same).
const MAX_BAT: u64 = 512 << 20;

/// Mutable state behind the driver's lock.
struct State {
    bat: Bat,
    meta: MetaState,
    closed: bool,
}

/// An opened VHDX image.
pub struct VhdxDriver {
    /// The image file (or its in-memory replay view).
    storage: Arc<dyn Storage>,
    read_only: bool,
    md: Metadata,
    regions: RegionTable,
    /// The log this open replayed (into the file, or in memory).
    replayed: Option<Replay>,
    /// True if the log was replayed in memory only (read-only open).
    replay_in_memory: bool,
    backing: Mutex<Option<Arc<dyn BlockDriver>>>,
    state: Mutex<State>,
}

impl VhdxDriver {
    /// Open `storage` as VHDX.
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let name = storage.name().to_string();
        Self::open_inner(storage, opts).map_err(|e| e.with_path(&name))
    }

    fn open_inner(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let file_size = storage.size()?;
        let mut sig = [0u8; 8];
        storage.read_at(&mut sig, 0)?;
        if file_size < MIB || &sig != FILE_SIGNATURE {
            return Err(not_vhdx());
        }
        let read_only = opts.read_only || storage.read_only();
        let mut h1 = vec![0u8; HEADER_SIZE];
        let mut h2 = vec![0u8; HEADER_SIZE];
        storage.read_at(&mut h1, HEADER_OFFSETS[0])?;
        storage.read_at(&mut h2, HEADER_OFFSETS[1])?;
        let (header, slot) = choose_header(&h1, &h2)?;
        header.validate_log()?;
        let mut meta = MetaState {
            header,
            slot,
            session: Guid::random(),
            session_started: false,
            bat_offset: 0,
            dirty: Default::default(),
            next_seq: 1,
        };
        // The log comes first: it may rewrite the region table, metadata or BAT.
        let replay = log::search(&*storage, &meta.header)?;
        let mut storage = storage;
        let mut replay_in_memory = false;
        if let Some(r) = &replay {
            if read_only {
                storage = Arc::new(ReplayOverlay::new(storage, r)?);
                replay_in_memory = true;
            } else {
                log::replay(&*storage, r)?;
                meta.next_seq = r.last_sequence + 1;
                // Both headers now say the log is empty (QEMU's vhdx_log_reset); the first
                // guest write still gets a new data write GUID.
                meta.update_header(&*storage, false, Guid::default())?;
                meta.update_header(&*storage, false, Guid::default())?;
            }
        }
        let log_range = (meta.header.log_offset, meta.header.log_length as u64);
        let mut rt = vec![0u8; REGION_SIZE];
        storage.read_at(&mut rt, REGION_OFFSETS[0])?;
        let regions = match RegionTable::parse(&rt, log_range) {
            Ok(r) => r,
            Err(first) => {
                storage.read_at(&mut rt, REGION_OFFSETS[1])?;
                RegionTable::parse(&rt, log_range).map_err(|_| first)?
            }
        };
        let md = Metadata::read(
            &*storage,
            (regions.metadata.offset, regions.metadata.length),
        )?;
        let bat_len = regions.bat.length as u64;
        if bat_len > MAX_BAT {
            return Err(Error::corrupt(format!(
                "VHDX BAT region is {bat_len} bytes (at most {MAX_BAT})"
            )));
        }
        let mut bytes = vec![0u8; bat_len as usize];
        storage.read_at(&mut bytes, regions.bat.offset)?;
        let bat = Bat::decode(&bytes, &md)?;
        for b in 0..bat.data_blocks() {
            bat.kind(b)?;
        }
        meta.bat_offset = regions.bat.offset;
        if !read_only {
            // Refuse to write into an image whose blocks overlap metadata or each other.
            let found = super::check::scan(&bat, &regions, &meta.header, storage.size()?);
            if let Some(m) = found.first() {
                return Err(Error::corrupt(format!("{m}; open it read-only")));
            }
            if md.has_parent {
                return Err(Error::unsupported(
                    "Writing differencing VHDX images is not supported; open it read-only",
                ));
            }
        }
        Ok(VhdxDriver {
            storage,
            read_only,
            md,
            regions,
            replayed: replay,
            replay_in_memory,
            backing: Mutex::new(None),
            state: Mutex::new(State {
                bat,
                meta,
                closed: false,
            }),
        })
    }

    /// The metadata items read at open.
    pub fn metadata(&self) -> &Metadata {
        &self.md
    }

    /// True if this open found a dirty log and replayed it only in memory.
    pub fn replayed_in_memory(&self) -> bool {
        self.replay_in_memory
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vhdx state lock poisoned"))?;
        if st.closed {
            return Err(Error::invalid("the image is closed").with_path(self.storage.name()));
        }
        Ok(st)
    }

    fn bounds(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.md.disk_size;
        crate::guard::in_range(offset, len, size, self.storage.name())
    }

    fn writable(&self) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())
    }

    fn parent(&self) -> Option<Arc<dyn BlockDriver>> {
        self.backing.lock().ok().and_then(|b| b.clone())
    }

    /// Read `dst` at guest `guest` from the parent, or zeros without one.
    fn read_parent(&self, guest: u64, dst: &mut [u8]) -> Result<()> {
        match self.parent() {
            Some(p) => {
                let psize = p.virtual_size();
                let n = psize.saturating_sub(guest).min(dst.len() as u64) as usize;
                if n > 0 {
                    p.read(guest, &mut dst[..n])?;
                }
                dst[n..].fill(0);
                Ok(())
            }
            None => {
                dst.fill(0);
                Ok(())
            }
        }
    }

    /// The sector bitmap bits for `count` logical sectors of guest `guest` (one bool each).
    fn bitmap_bits(&self, bitmap: u64, guest: u64, count: u64) -> Result<Vec<bool>> {
        let sector = self.md.logical_sector as u64;
        let chunk_bytes = self.md.chunk_ratio() * self.md.block_size as u64;
        let first = (guest % chunk_bytes) / sector;
        let mut bytes = vec![0u8; ((first % 8 + count).div_ceil(8)) as usize];
        self.storage.read_at(&mut bytes, bitmap + first / 8)?;
        Ok((0..count)
            .map(|i| {
                let bit = first % 8 + i;
                bytes[(bit / 8) as usize] >> (bit % 8) & 1 != 0
            })
            .collect())
    }

    /// Split a partially present run into (guest, len, present) pieces by the sector bitmap.
    fn partial_pieces(&self, guest: u64, len: u64, bitmap: u64) -> Result<Vec<(u64, u64, bool)>> {
        let sector = self.md.logical_sector as u64;
        let start = guest - guest % sector;
        let end = (guest + len).next_multiple_of(sector);
        let bits = self.bitmap_bits(bitmap, start, (end - start) / sector)?;
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        for (i, &b) in bits.iter().enumerate() {
            let s = (start + i as u64 * sector).max(guest);
            let e = (start + (i as u64 + 1) * sector).min(guest + len);
            match out.last_mut() {
                Some(last) if last.2 == b => last.1 += e - s,
                _ => out.push((s, e - s, b)),
            }
        }
        Ok(out)
    }
}

impl BlockDriver for VhdxDriver {
    fn format_name(&self) -> &'static str {
        "vhdx"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.md.disk_size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        // Blocks never move once allocated: read outside the lock.
        let runs = self.lock()?.bat.runs(offset, buf.len() as u64)?;
        let bs = self.md.block_size as u64;
        for run in runs {
            let dst = &mut buf[(run.guest - offset) as usize..][..run.len as usize];
            match run.kind {
                Kind::Present(h) => self.storage.read_at(dst, h)?,
                Kind::Zero => dst.fill(0),
                Kind::Absent if self.md.has_parent => self.read_parent(run.guest, dst)?,
                Kind::Absent => dst.fill(0),
                Kind::Partial(block, bitmap) => {
                    for (g, l, present) in self.partial_pieces(run.guest, run.len, bitmap)? {
                        let d = &mut dst[(g - run.guest) as usize..][..l as usize];
                        if present {
                            self.storage.read_at(d, block + g % bs)?;
                        } else {
                            self.read_parent(g, d)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        self.bounds(offset, buf.len() as u64)?;
        let bs = self.md.block_size as u64;
        let in_place = {
            let mut st = self.lock()?;
            let State { bat, meta, .. } = &mut *st;
            meta.start_session(&*self.storage)?;
            let mut in_place = Vec::new();
            for run in bat.runs(offset, buf.len() as u64)? {
                let src = &buf[(run.guest - offset) as usize..][..run.len as usize];
                match run.kind {
                    Kind::Present(h) => in_place.push((h, run.guest, run.len)),
                    Kind::Zero | Kind::Absent => {
                        let mut pos = 0u64;
                        while pos < run.len {
                            let g = run.guest + pos;
                            let take = (bs - g % bs).min(run.len - pos);
                            let piece = &src[pos as usize..(pos + take) as usize];
                            // Unallocated and zero blocks read as zeros already.
                            if !qimg_core::zero::is_zero(piece) {
                                let host = allocate_block(&*self.storage, bs)?;
                                self.storage.write_at(piece, host + g % bs)?;
                                let i = bat.set(g / bs, host, FULLY_PRESENT);
                                meta.mark(i);
                            }
                            pos += take;
                        }
                    }
                    Kind::Partial(..) => {
                        return Err(Error::unsupported(
                            "Writing differencing VHDX images is not supported",
                        ))
                    }
                }
            }
            in_place
        };
        for (h, g, l) in in_place {
            self.storage
                .write_at(&buf[(g - offset) as usize..][..l as usize], h)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.writable()?;
        self.bounds(offset, length)?;
        let runs = {
            let mut st = self.lock()?;
            st.meta.start_session(&*self.storage)?;
            st.bat.runs(offset, length)?
        };
        // Zero and unallocated blocks read as zeros already; allocated ones get zeros in place.
        for run in runs {
            if let Kind::Present(h) = run.kind {
                self.storage.write_zeroes(h, run.len, may_unmap)?;
            }
        }
        Ok(())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.write_zeroes(offset, length, true)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        self.bounds(offset, length)?;
        let runs = self.lock()?.bat.runs(offset, length)?;
        let mut out = Vec::new();
        for run in runs {
            let mut push = |start: u64, length: u64, status: LayerStatus| {
                out.push(LayerExtent {
                    start,
                    length,
                    status,
                })
            };
            match run.kind {
                Kind::Present(h) => push(
                    run.guest,
                    run.len,
                    LayerStatus::Data {
                        host_offset: Some(h),
                        compressed: false,
                        reads_zero: false,
                    },
                ),
                Kind::Zero => push(run.guest, run.len, LayerStatus::Zero { host_offset: None }),
                Kind::Absent if self.md.has_parent => {
                    push(run.guest, run.len, LayerStatus::Unallocated)
                }
                Kind::Absent => push(run.guest, run.len, LayerStatus::Zero { host_offset: None }),
                Kind::Partial(block, bitmap) => {
                    let bs = self.md.block_size as u64;
                    for (g, l, present) in self.partial_pieces(run.guest, run.len, bitmap)? {
                        let status = if present {
                            LayerStatus::Data {
                                host_offset: Some(block + g % bs),
                                compressed: false,
                                reads_zero: false,
                            }
                        } else {
                            LayerStatus::Unallocated
                        };
                        push(g, l, status);
                    }
                }
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        if self.read_only {
            return Ok(());
        }
        let State { bat, meta, .. } = &mut *st;
        meta.commit(&*self.storage, bat)?;
        self.storage.flush()
    }

    fn close(&self) -> Result<()> {
        self.flush()?;
        self.lock()?.closed = true;
        Ok(())
    }

    fn info(&self) -> Result<DriverInfo> {
        Ok(DriverInfo {
            cluster_size: Some(self.md.block_size as u64),
            backing_file: self.md.parent.as_ref().and_then(|p| p.parent_name()),
            backing_format: self.md.parent.as_ref().map(|_| "vhdx".to_string()),
            ..Default::default()
        })
    }

    fn check(&self, repair: RepairMode) -> Result<CheckReport> {
        let st = self.lock()?;
        let mut r = super::check::check(
            &st.bat,
            &self.regions,
            &st.meta.header,
            self.storage.size()?,
        );
        if self.replayed.is_some() {
            if self.replay_in_memory {
                r.messages.push(
                    "ERROR: the log holds writes that need to be replayed (read-only open: replayed in memory only)"
                        .to_string(),
                );
                r.corruptions += 1;
            } else {
                r.corruptions_fixed += 1;
            }
        }
        let _ = repair;
        Ok(r)
    }

    fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        self.parent()
    }

    fn set_backing(&self, backing: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        if backing.is_some() && !self.md.has_parent {
            return Err(Error::unsupported("vhdx images have no backing file"));
        }
        *self
            .backing
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vhdx backing lock poisoned"))? = backing;
        Ok(())
    }
}
