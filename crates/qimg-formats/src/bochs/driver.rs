//! The Bochs [`BlockDriver`]: read-only; reads split per extent, each extent's bitmap read once
//! per request.
use super::header::{Header, HEADER_SIZE};
use super::mapping::{read_extent, Catalog};
use crate::options::OpenOptions;
use crate::readonly;
use qimg_core::{BlockDriver, Result, Storage};
use std::sync::Arc;

/// An opened growing Bochs image.
pub struct BochsDriver {
    /// The image file.
    storage: Arc<dyn Storage>,
    /// The bounded header.
    h: Header,
    /// The catalog.
    catalog: Catalog,
}

impl BochsDriver {
    /// Open `storage` as a growing Bochs image (read-only).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        readonly::refuse_rw_open("bochs", opts.read_only, storage.name())?;
        let mut b = [0u8; HEADER_SIZE];
        storage.read_at(&mut b, 0)?;
        let h = Header::parse(&b, storage.size()?).map_err(|e| e.with_path(storage.name()))?;
        let catalog = Catalog::load(&*storage, &h)?;
        Ok(BochsDriver {
            storage,
            h,
            catalog,
        })
    }
}

impl BlockDriver for BochsDriver {
    fn format_name(&self) -> &'static str {
        "bochs"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.h.disk
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::guard::in_range(offset, buf.len() as u64, self.h.disk, self.storage.name())?;
        let ext = u64::from(self.h.extent);
        let mut pos = offset;
        let end = offset + buf.len() as u64;
        while pos < end {
            let idx = pos / ext;
            let within = pos % ext;
            let n = (ext - within).min(end - pos);
            let dst = &mut buf[(pos - offset) as usize..(pos - offset + n) as usize];
            match self.catalog.bitmap_offset(&self.h, idx) {
                Some(bm) => read_extent(&*self.storage, &self.h, bm, within, dst)?,
                None => dst.fill(0),
            }
            pos += n;
        }
        Ok(())
    }

    readonly::read_only_methods!("bochs");
}
