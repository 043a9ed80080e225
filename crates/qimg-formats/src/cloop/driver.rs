//! The cloop [`BlockDriver`]: read-only; each read inflates the blocks it touches (the last
//! block inflated is kept, as QEMU keeps one).
use super::header::{parse_offsets, Header, PREAMBLE};
use super::mapping::inflate_block;
use crate::options::OpenOptions;
use crate::readonly;
use qimg_core::{BlockDriver, Result, Storage};
use std::sync::{Arc, Mutex};

/// An opened cloop V2.0 image.
pub struct CloopDriver {
    /// The image file.
    storage: Arc<dyn Storage>,
    /// Block size and count.
    h: Header,
    /// n_blocks + 1 offsets, checked monotonic and inside the file.
    offsets: Vec<u64>,
    /// The last inflated block: (index, bytes).
    cache: Mutex<Option<(usize, Vec<u8>)>>,
}

impl CloopDriver {
    /// Open `storage` as a cloop V2.0 image (read-only).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        readonly::refuse_rw_open("cloop", opts.read_only, storage.name())?;
        let file_size = storage.size()?;
        let mut b = [0u8; 136];
        storage.read_at(&mut b, 0)?;
        let h = Header::parse(&b, file_size).map_err(|e| e.with_path(storage.name()))?;
        let mut raw = vec![0u8; (h.n_blocks as usize + 1) * 8];
        storage.read_at(&mut raw, PREAMBLE + 8)?;
        let offsets =
            parse_offsets(&raw, &h, file_size).map_err(|e| e.with_path(storage.name()))?;
        Ok(CloopDriver {
            storage,
            h,
            offsets,
            cache: Mutex::new(None),
        })
    }

    /// Copy `n` bytes at byte `within` of block `idx` into `dst`.
    fn read_block(&self, idx: usize, within: usize, dst: &mut [u8]) -> Result<()> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((i, data)) = cache.as_ref() {
            if *i == idx {
                dst.copy_from_slice(&data[within..within + dst.len()]);
                return Ok(());
            }
        }
        let (a, b) = (self.offsets[idx], self.offsets[idx + 1]);
        let mut src = vec![0u8; (b - a) as usize];
        self.storage.read_at(&mut src, a)?;
        let mut data = vec![0u8; self.h.block_size as usize];
        inflate_block(&src, &mut data, idx).map_err(|e| e.with_path(self.storage.name()))?;
        dst.copy_from_slice(&data[within..within + dst.len()]);
        *cache = Some((idx, data));
        Ok(())
    }
}

impl BlockDriver for CloopDriver {
    fn format_name(&self) -> &'static str {
        "cloop"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.h.size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::guard::in_range(offset, buf.len() as u64, self.h.size(), self.storage.name())?;
        let bs = u64::from(self.h.block_size);
        let mut pos = offset;
        let end = offset + buf.len() as u64;
        while pos < end {
            let within = pos % bs;
            let n = (bs - within).min(end - pos);
            let dst = &mut buf[(pos - offset) as usize..(pos - offset + n) as usize];
            self.read_block((pos / bs) as usize, within as usize, dst)?;
            pos += n;
        }
        Ok(())
    }

    readonly::read_only_methods!("cloop");
}
