//! The VHD driver: fixed disks map guest bytes one to one onto the file (footer after them);
//! dynamic disks go through the BAT, allocating blocks at the end of the file.
//!
//! Open follows QEMU's `vpc_open`: the footer at offset 0, else (fixed disks) at the end of the
//! file; its checksum must match; the guest size comes from the CHS geometry or `current_size`
//! by the creator rule ([`Footer::guest_size`]); the dynamic header and BAT are bounded as
//! [`DynHeader::parse`] says, and no block may end past the end of the file ("The image has been
//! truncated"). Like QEMU, reads ignore the per-block sector bitmaps (QEMU sets every bit).
//!
//! Block status follows `qemu-img map` on qemu-img 10.0: dynamic unallocated blocks are zeros
//! decided here; allocated blocks are data (no host-hole split, as QEMU); fixed disks are data
//! at the same offset, split at host holes (`zero: true, data: true`).
use super::alloc::{allocate_block, flush_metadata};
use super::header::{
    DynHeader, Footer, DYN_HEADER_SIZE, FOOTER_SIZE, TYPE_DIFFERENCING, TYPE_FIXED,
};
use super::mapping::Bat;
use crate::blockmap::Run;
use crate::options::OpenOptions;
use crate::vdi::driver::split_host_holes;
use qimg_core::{
    BlockDriver, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, Result, Storage,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// Mutable state behind the driver's lock.
struct State {
    /// The BAT (`None` for fixed disks).
    bat: Option<Bat>,
    /// Host offset where the next block goes (the trailing footer's offset).
    free: u64,
    /// Set by `close`.
    closed: bool,
}

/// An opened VHD.
pub struct VpcDriver {
    /// The image file.
    storage: Arc<dyn Storage>,
    /// Refuse writes.
    read_only: bool,
    /// The footer (written unchanged after each new block).
    footer: Footer,
    /// Guest size.
    size: u64,
    /// BAT and allocation point.
    state: Mutex<State>,
}

fn invalid_image(name: &str) -> Error {
    Error::new(ErrorCode::WrongFormat, "invalid VPC image").with_path(name)
}

/// Beyond QEMU, for writable opens: no block may overlap the footer copy, the dynamic header or
/// the BAT (a write there would overwrite the image's own metadata), nor another block.
fn check_no_overlap(bat: &Bat, dyn_offset: u64) -> Result<()> {
    let span = bat.bitmap_size + bat.block_size;
    let mut meta = [
        (0, FOOTER_SIZE as u64),
        (dyn_offset, dyn_offset + DYN_HEADER_SIZE as u64),
        (bat.offset, bat.offset + bat.entries.len() as u64 * 4),
    ];
    meta.sort_unstable();
    let mut blocks: Vec<(u64, usize)> = bat
        .entries
        .iter()
        .enumerate()
        .filter(|(_, &e)| e != super::header::BAT_UNALLOCATED)
        .map(|(i, &e)| (e as u64 * 512, i))
        .collect();
    blocks.sort_unstable();
    let mut prev_end = 0u64;
    for (start, idx) in blocks {
        let end = start + span;
        let hits_meta = meta.iter().any(|&(a, b)| start < b && a < end);
        if hits_meta || start < prev_end {
            return Err(Error::corrupt(format!(
                "VHD block {idx} (at {start}) overlaps the image metadata or another block; open it read-only"
            )));
        }
        prev_end = end;
    }
    Ok(())
}

impl VpcDriver {
    /// Open `storage` as a VHD (dynamic, or fixed with its footer at the end).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let name = storage.name().to_string();
        let file_size = storage.size()?;
        let mut raw = [0u8; FOOTER_SIZE];
        storage.read_at(&mut raw, 0)?;
        let mut at_end = false;
        if !Footer::has_cookie(&raw) {
            if file_size < FOOTER_SIZE as u64 {
                return Err(invalid_image(&name));
            }
            storage.read_at(&mut raw, file_size - FOOTER_SIZE as u64)?;
            at_end = true;
        }
        if !Footer::has_cookie(&raw) {
            return Err(invalid_image(&name));
        }
        let footer = Footer::parse(&raw).map_err(|e| e.with_path(&name))?;
        if at_end && footer.disk_type != TYPE_FIXED {
            return Err(invalid_image(&name));
        }
        if footer.disk_type == TYPE_DIFFERENCING {
            return Err(Error::unsupported(
                "Differencing VHD images (with a parent disk) are not supported",
            )
            .with_path(&name));
        }
        let size = footer.guest_size().map_err(|e| e.with_path(&name))?;
        let mut free = file_size.saturating_sub(FOOTER_SIZE as u64);
        let writable = !(opts.read_only || storage.read_only());
        if at_end && writable && size > free {
            // Beyond QEMU: guest writes past the data area would overwrite the footer.
            return Err(Error::corrupt(format!(
                "fixed VHD claims {size} bytes but holds {free} before its footer; open it read-only"
            ))
            .with_path(&name));
        }
        let bat = if at_end {
            None
        } else {
            // Past the end of the file reads as zeros, as in QEMU; the header checks reject it.
            let mut dh = [0u8; DYN_HEADER_SIZE];
            storage.read_at(&mut dh, footer.data_offset)?;
            let h = DynHeader::parse(&dh, size, file_size).map_err(|e| e.with_path(&name))?;
            let mut bytes = vec![0u8; h.max_table_entries as usize * 4];
            storage.read_at(&mut bytes, h.table_offset)?;
            let bat = Bat::decode(&bytes, h.table_offset, h.block_size as u64, h.bitmap_size());
            if writable {
                check_no_overlap(&bat, footer.data_offset).map_err(|e| e.with_path(&name))?;
            }
            free = (h.table_offset + bytes.len() as u64)
                .next_multiple_of(512)
                .max(bat.data_end());
            if free > file_size {
                return Err(Error::corrupt(
                    "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.",
                )
                .with_path(&name));
            }
            Some(bat)
        };
        Ok(VpcDriver {
            read_only: opts.read_only || storage.read_only(),
            storage,
            footer,
            size,
            state: Mutex::new(State {
                bat,
                free,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vpc state lock poisoned"))?;
        if st.closed {
            return Err(Error::invalid("the image is closed").with_path(self.storage.name()));
        }
        Ok(st)
    }

    fn bounds(&self, offset: u64, len: u64) -> Result<()> {
        crate::guard::in_range(offset, len, self.size, self.storage.name())
    }

    fn writable(&self) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())
    }
}

impl BlockDriver for VpcDriver {
    fn format_name(&self) -> &'static str {
        "vpc"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        // Look up under the lock, read outside it (blocks never move once allocated).
        let runs = {
            let st = self.lock()?;
            match &st.bat {
                Some(bat) => bat.runs(offset, buf.len() as u64),
                None => vec![Run {
                    guest: offset,
                    len: buf.len() as u64,
                    host: Some(offset),
                }],
            }
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
        self.bounds(offset, buf.len() as u64)?;
        let mut st = self.lock()?;
        let State { bat, free, .. } = &mut *st;
        let Some(bat) = bat else {
            drop(st);
            return self.storage.write_at(buf, offset);
        };
        // Allocation happens under the lock; writes into allocated blocks go after it.
        let bs = bat.block_size;
        let mut in_place = Vec::new();
        for run in bat.runs(offset, buf.len() as u64) {
            let src = &buf[(run.guest - offset) as usize..][..run.len as usize];
            if run.host.is_some() {
                in_place.push(run);
                continue;
            }
            let mut pos = 0u64;
            while pos < run.len {
                let g = run.guest + pos;
                let take = (bs - g % bs).min(run.len - pos);
                let piece = &src[pos as usize..(pos + take) as usize];
                if piece.iter().any(|&b| b != 0) {
                    let idx = (g / bs) as usize;
                    allocate_block(
                        &*self.storage,
                        bat,
                        free,
                        &self.footer.raw,
                        idx,
                        g % bs,
                        piece,
                    )?;
                }
                pos += take;
            }
        }
        drop(st);
        for run in in_place {
            let src = &buf[(run.guest - offset) as usize..][..run.len as usize];
            self.storage
                .write_at(src, run.host.expect("allocated run"))?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.writable()?;
        self.bounds(offset, length)?;
        let st = self.lock()?;
        let Some(bat) = &st.bat else {
            return self.storage.write_zeroes(offset, length, may_unmap);
        };
        // VHD cannot free a block in place: allocated ones get zeros, unallocated ones already
        // read as zeros.
        for run in bat.runs(offset, length) {
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
        self.bounds(offset, length)?;
        let st = self.lock()?;
        let mut out = Vec::new();
        let Some(bat) = &st.bat else {
            split_host_holes(&*self.storage, offset, length, offset, &mut out)?;
            return Ok(out);
        };
        for run in bat.runs(offset, length) {
            out.push(LayerExtent {
                start: run.guest,
                length: run.len,
                status: match run.host {
                    None => LayerStatus::Zero { host_offset: None },
                    Some(h) => LayerStatus::Data {
                        host_offset: Some(h),
                        compressed: false,
                        reads_zero: false,
                    },
                },
            });
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        match &mut st.bat {
            Some(bat) => flush_metadata(&*self.storage, bat),
            None => self.storage.flush(),
        }
    }

    fn close(&self) -> Result<()> {
        let mut st = self.lock()?;
        match &mut st.bat {
            Some(bat) => flush_metadata(&*self.storage, bat)?,
            None => self.storage.flush()?,
        }
        st.closed = true;
        Ok(())
    }

    fn info(&self) -> Result<DriverInfo> {
        let st = self.lock()?;
        Ok(DriverInfo {
            cluster_size: st.bat.as_ref().map(|b| b.block_size),
            ..Default::default()
        })
    }
}
