//! Allocating VHD blocks at the end of the file, and writing the BAT back in a crash-safe order.
//!
//! A new block goes where the trailing footer is: its sector bitmap (all ones, as QEMU writes
//! it, so every sector counts as present), then its data, then the footer again after it. The BAT
//! entry only changes in memory; [`flush_metadata`] makes data and footer durable first and writes
//! the BAT sectors after, then flushes again. A power cut can so leave an unreferenced block at
//! the end (QEMU, like qimg, places the next block after the highest BAT entry, overwriting it),
//! never a BAT entry pointing past what was written. The footer copy at offset 0 identifies the
//! image while the trailing one is being moved.
use super::header::FOOTER_SIZE;
use super::mapping::Bat;
use qimg_core::{Error, Result, Storage};

/// Claim a block for guest block `idx` at host `*free`, write `data` at `within` bytes into it,
/// zero the rest where the file already had bytes, and move the footer after it.
pub fn allocate_block(
    storage: &dyn Storage,
    bat: &mut Bat,
    free: &mut u64,
    footer: &[u8; FOOTER_SIZE],
    idx: usize,
    within: u64,
    data: &[u8],
) -> Result<()> {
    let sector = u32::try_from(*free / 512).map_err(|_| {
        Error::corrupt("VHD image too large for another block (BAT sector overflow)")
    })?;
    let old_size = storage.size()?;
    let bitmap = vec![0xffu8; bat.bitmap_size as usize];
    storage.write_at(&bitmap, *free)?;
    let start = *free + bat.bitmap_size;
    storage.write_at(data, start + within)?;
    let end = start + bat.block_size;
    for (a, b) in [
        (start, start + within),
        (start + within + data.len() as u64, end),
    ] {
        let b = b.min(old_size);
        if a < b {
            storage.write_zeroes(a, b - a, true)?;
        }
    }
    storage.write_at(footer, end)?;
    *free = end;
    bat.set(idx, sector);
    Ok(())
}

/// Write back changed BAT entries: data and footer flushed → BAT sectors → flush.
pub fn flush_metadata(storage: &dyn Storage, bat: &mut Bat) -> Result<()> {
    let Some((lo, hi)) = bat.dirty else {
        return storage.flush();
    };
    storage.flush()?;
    let lo = lo / 128 * 128;
    let hi = hi.div_ceil(128).saturating_mul(128).min(bat.entries.len());
    storage.write_at(&bat.encode(lo, hi), bat.offset + lo as u64 * 4)?;
    storage.flush()?;
    bat.dirty = None;
    Ok(())
}
