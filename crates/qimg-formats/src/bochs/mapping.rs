//! The Bochs catalog (extent → stored extent number) and per-extent sector bitmaps.
use super::header::{Header, SECTOR};
use crate::bytes::le32;
use qimg_core::{Result, Storage};

/// Catalog value of an extent that was never written.
pub const UNALLOCATED: u32 = 0xffff_ffff;

/// The catalog, read whole (bounded by [`super::header::MAX_CATALOG`] and the file size).
pub struct Catalog {
    /// One entry per extent.
    pub entries: Vec<u32>,
}

impl Catalog {
    /// Read the catalog.
    pub fn load(storage: &dyn Storage, h: &Header) -> Result<Catalog> {
        let mut raw = vec![0u8; 4 * h.catalog as usize];
        storage.read_at(&mut raw, u64::from(h.header_size))?;
        Ok(Catalog {
            entries: (0..h.catalog as usize).map(|i| le32(&raw, 4 * i)).collect(),
        })
    }

    /// Host offset of the bitmap of extent `idx`, or `None` when not allocated.
    pub fn bitmap_offset(&self, h: &Header, idx: u64) -> Option<u64> {
        let e = *self.entries.get(usize::try_from(idx).ok()?)?;
        (e != UNALLOCATED).then(|| {
            h.data_offset() + SECTOR * u64::from(e) * (h.extent_blocks() + h.bitmap_blocks())
        })
    }
}

/// Read `buf.len()` guest bytes at byte `within` of one extent whose bitmap is at `bitmap_off`
/// (the caller keeps the range inside the extent): sectors whose bit is set come from the
/// extent, the others read as zeros. The bitmap bytes covering the range are read once.
pub fn read_extent(
    storage: &dyn Storage,
    h: &Header,
    bitmap_off: u64,
    within: u64,
    buf: &mut [u8],
) -> Result<()> {
    let end = within + buf.len() as u64;
    let first = within / SECTOR;
    let last = end.div_ceil(SECTOR);
    let base = first / 8 * 8;
    let mut bits = vec![0u8; (last.div_ceil(8) - first / 8) as usize];
    storage.read_at(&mut bits, bitmap_off + first / 8)?;
    let set = |s: u64| bits[((s - base) / 8) as usize] >> ((s - base) % 8) & 1 == 1;
    let data = bitmap_off + SECTOR * h.bitmap_blocks();
    let mut pos = within;
    while pos < end {
        let s = pos / SECTOR;
        let on = set(s);
        let mut e = s + 1;
        while e < last && set(e) == on {
            e += 1;
        }
        let stop = (e * SECTOR).min(end);
        let dst = &mut buf[(pos - within) as usize..(stop - within) as usize];
        if on {
            storage.read_at(dst, data + pos)?;
        } else {
            dst.fill(0);
        }
        pos = stop;
    }
    Ok(())
}
