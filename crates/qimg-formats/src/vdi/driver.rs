//! The VDI driver: reads and writes through the block map, allocates blocks at the end of the
//! data area, and writes metadata back on flush (see [`super::alloc`] for the ordering).
//!
//! Block status follows `qemu-img map` on qemu-img 10.0: unallocated blocks are zeros decided by
//! this layer (`present: true, zero: true, data: false`); allocated blocks are data at their host
//! offset; in static images only (QEMU's BDRV_BLOCK_RECURSE) they are split where the host file
//! has holes (`zero: true, data: true` there).
use super::alloc::{allocate_block, flush_metadata};
use super::header::{VdiHeader, HEADER_SIZE};
use super::mapping::BlockMap;
use crate::blockmap::Run;
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, CheckReport, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, RepairMode,
    Result, Storage,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// Mutable state behind the driver's lock.
struct State {
    /// The header as it will be written back.
    header: VdiHeader,
    /// The block map.
    map: BlockMap,
    /// Set by `close`.
    closed: bool,
}

/// An opened VDI image.
pub struct VdiDriver {
    /// The image file.
    storage: Arc<dyn Storage>,
    /// Refuse writes.
    read_only: bool,
    /// Header, map and flags.
    state: Mutex<State>,
}

impl VdiDriver {
    /// Open `storage` as VDI, checking the header against QEMU's limits.
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let name = storage.name().to_string();
        let file_size = storage.size()?;
        let storage_ro = storage.read_only();
        if file_size < HEADER_SIZE as u64 {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in VDI format (file too short)",
            )
            .with_path(name));
        }
        let mut raw = [0u8; HEADER_SIZE];
        storage.read_at(&mut raw, 0)?;
        let header = VdiHeader::parse(&raw, file_size).map_err(|e| e.with_path(&name))?;
        let mut bytes = vec![0u8; header.bmap_bytes() as usize];
        storage.read_at(&mut bytes, header.offset_bmap as u64)?;
        let map = BlockMap::decode(&bytes, header.blocks_in_image as usize);
        let read_only = opts.read_only || storage_ro;
        if !read_only {
            // Beyond QEMU: a data area starting inside the header or block map would let a write
            // overwrite the image's own metadata. Such an image opens read-only only.
            // Likewise entries QEMU's check calls corrupt (slots past the map, shared slots).
            let found = super::check::check(&header, &map, qimg_core::RepairMode::None)?;
            if let Some(m) = found
                .messages
                .iter()
                .find(|m| !m.starts_with("ERROR: allocated blocks mismatch"))
            {
                return Err(Error::corrupt(format!(
                    "VDI block map is corrupt ({}); open it read-only",
                    m.trim_start_matches("ERROR: ")
                ))
                .with_path(&name));
            }
            let meta_end = header.offset_bmap as u64 + header.bmap_bytes();
            if (header.offset_data as u64) < meta_end {
                return Err(Error::corrupt(format!(
                    "VDI data area (offset 0x{:x}) overlaps the block map (ending at 0x{meta_end:x}); open it read-only",
                    header.offset_data
                ))
                .with_path(&name));
            }
        }
        Ok(VdiDriver {
            storage,
            read_only,
            state: Mutex::new(State {
                header,
                map,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vdi state lock poisoned"))?;
        if st.closed {
            return Err(Error::invalid("the image is closed").with_path(self.storage.name()));
        }
        Ok(st)
    }

    fn bounds(&self, st: &State, offset: u64, len: u64) -> Result<()> {
        let size = st.header.disk_size;
        crate::guard::in_range(offset, len, size, self.storage.name())
    }

    fn writable(&self) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())
    }

    /// Allocate blocks for the non-zero data of `buf` (at guest `offset`) that falls in
    /// unallocated blocks, writing it; returns the runs in allocated blocks, left to the caller.
    fn write_locked(&self, st: &mut State, offset: u64, buf: &[u8]) -> Result<Vec<Run>> {
        let State { header, map, .. } = st;
        let bs = header.block_size as u64;
        let mut in_place = Vec::new();
        for run in map.runs(header, offset, buf.len() as u64) {
            let src = &buf[(run.guest - offset) as usize..][..run.len as usize];
            match run.host {
                Some(_) => in_place.push(run),
                None => {
                    // Unallocated blocks already read as zeros: only non-zero data allocates.
                    let mut pos = 0u64;
                    while pos < run.len {
                        let g = run.guest + pos;
                        let take = (bs - g % bs).min(run.len - pos);
                        let piece = &src[pos as usize..(pos + take) as usize];
                        if piece.iter().any(|&b| b != 0) {
                            allocate_block(
                                &*self.storage,
                                header,
                                map,
                                (g / bs) as usize,
                                g % bs,
                                piece,
                            )?;
                        }
                        pos += take;
                    }
                }
            }
        }
        Ok(in_place)
    }
}

impl BlockDriver for VdiDriver {
    fn format_name(&self) -> &'static str {
        "vdi"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.state.lock().map(|s| s.header.disk_size).unwrap_or(0)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        // Look up under the lock, read outside it: blocks never move once allocated, so
        // parallel readers (convert keeps several chunks in flight) do not queue behind each other.
        let runs = {
            let st = self.lock()?;
            self.bounds(&st, offset, buf.len() as u64)?;
            st.map.runs(&st.header, offset, buf.len() as u64)
        };
        for run in runs {
            let dst = &mut buf[(run.guest - offset) as usize..][..run.len as usize];
            match run.host {
                Some(h) => self.storage.read_at(dst, h)?,
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        // Allocation happens under the lock; writes into blocks already allocated go after it.
        let in_place = {
            let mut st = self.lock()?;
            self.bounds(&st, offset, buf.len() as u64)?;
            self.write_locked(&mut st, offset, buf)?
        };
        for run in in_place {
            let src = &buf[(run.guest - offset) as usize..][..run.len as usize];
            self.storage
                .write_at(src, run.host.expect("allocated run"))?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.writable()?;
        let runs = {
            let st = self.lock()?;
            self.bounds(&st, offset, length)?;
            st.map.runs(&st.header, offset, length)
        };
        // Unallocated blocks read as zeros already; allocated ones get zeros (a hole where the
        // host file can punch one) and stay allocated, as VDI cannot free a block in place.
        for run in runs {
            if let Some(h) = run.host {
                self.storage.write_zeroes(h, run.len, may_unmap)?;
            }
        }
        Ok(())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.write_zeroes(offset, length, true)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        let (runs, recurse) = {
            let st = self.lock()?;
            self.bounds(&st, offset, length)?;
            let recurse = st.header.image_type == super::header::TYPE_STATIC;
            (st.map.runs(&st.header, offset, length), recurse)
        };
        let mut out = Vec::new();
        for run in runs {
            match run.host {
                None => out.push(LayerExtent {
                    start: run.guest,
                    length: run.len,
                    status: LayerStatus::Zero { host_offset: None },
                }),
                Some(h) if recurse => {
                    split_host_holes(&*self.storage, run.guest, run.len, h, &mut out)?
                }
                Some(h) => out.push(LayerExtent {
                    start: run.guest,
                    length: run.len,
                    status: LayerStatus::Data {
                        host_offset: Some(h),
                        compressed: false,
                        reads_zero: false,
                    },
                }),
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        let State { header, map, .. } = &mut *st;
        flush_metadata(&*self.storage, header, map)
    }

    fn close(&self) -> Result<()> {
        let mut st = self.lock()?;
        let State { header, map, .. } = &mut *st;
        flush_metadata(&*self.storage, header, map)?;
        st.closed = true;
        Ok(())
    }

    fn info(&self) -> Result<DriverInfo> {
        let st = self.lock()?;
        Ok(DriverInfo {
            cluster_size: Some(st.header.block_size as u64),
            ..Default::default()
        })
    }

    fn check(&self, repair: RepairMode) -> Result<CheckReport> {
        let st = self.lock()?;
        super::check::check(&st.header, &st.map, repair)
    }
}

/// Push `len` bytes of data at guest `guest` / host `host` as extents, split where the host
/// file has holes (those read as zeros: QEMU's DATA|ZERO).
pub(crate) fn split_host_holes(
    storage: &dyn Storage,
    guest: u64,
    len: u64,
    host: u64,
    out: &mut Vec<LayerExtent>,
) -> Result<()> {
    let mut done = 0;
    while done < len {
        let run = storage.data_run(host + done, len - done)?;
        let n = run.length.clamp(1, len - done);
        out.push(LayerExtent {
            start: guest + done,
            length: n,
            status: LayerStatus::Data {
                host_offset: Some(host + done),
                compressed: false,
                reads_zero: !run.data,
            },
        });
        done += n;
    }
    Ok(())
}
