//! Allocating VDI data blocks, and writing the metadata back in a crash-safe order.
//!
//! New blocks go to slot `blocks_allocated` (host `offset_data + slot * block_size`), as in QEMU,
//! unless an entry already references that slot (an image whose count lags its map, e.g. after a
//! power cut): then the next slot no entry references, so two blocks never share one.
//! The data is written first and the map entry only changes in memory; [`flush_metadata`] then
//! makes the data durable, writes the header (the new `blocks_allocated`), flushes, and only then
//! writes the block map sectors (header and map in one page-sized write when they share the first
//! 4 KiB). So a power cut can leave written-but-unreferenced blocks (the header counting more
//! blocks than the map references: space leaked, never data pointing at garbage), while QEMU — which writes the map without flushing the data first — can be left with
//! map entries pointing at blocks that never reached the disk.
use super::header::{VdiHeader, HEADER_SIZE};
use super::mapping::BlockMap;
use qimg_core::{Error, Result, Storage};

/// Claim the next data slot for guest block `idx`, write `data` at `within` bytes into it, and
/// make the rest of the block read as zeros (a slot left by an interrupted write may hold
/// garbage). Returns the host offset of the block.
pub fn allocate_block(
    storage: &dyn Storage,
    h: &mut VdiHeader,
    map: &mut BlockMap,
    idx: usize,
    within: u64,
    data: &[u8],
) -> Result<u64> {
    let Some(slot) = map.free_slot(h.blocks_allocated) else {
        return Err(Error::corrupt(format!(
            "VDI image has no free block left ({} of {} allocated)",
            h.blocks_allocated, h.blocks_in_image
        )));
    };
    let bs = h.block_size as u64;
    let host = h.block_offset(slot);
    let old_size = storage.size()?;
    storage.write_at(data, host + within)?;
    zero_below(storage, host, host + within, old_size)?;
    zero_below(
        storage,
        host + within + data.len() as u64,
        host + bs,
        old_size,
    )?;
    if storage.size()? < host + bs {
        storage.truncate(host + bs)?;
    }
    h.blocks_allocated += 1;
    map.set(idx, slot);
    Ok(host)
}

/// Make `[start, end)` read as zeros where it lies below `old_size` (beyond it the file is new).
fn zero_below(storage: &dyn Storage, start: u64, end: u64, old_size: u64) -> Result<()> {
    let end = end.min(old_size);
    if start < end {
        storage.write_zeroes(start, end - start, true)?;
    }
    Ok(())
}

/// Bytes a single metadata write may span to be treated as one page by the host (header and map
/// entries in the first 4 KiB are written together).
const PAGE: u64 = 4096;

/// Write back changed metadata: data flushed → header → flush → block map sectors → flush. When
/// the header and every changed map sector lie in the first 4 KiB (images up to 896 MiB with the
/// map right after the header, as QEMU and qimg create them), both go in one page-sized write, so
/// a power cut leaves the old or the new count-and-map pair and `qemu-img check` stays clean.
pub fn flush_metadata(storage: &dyn Storage, h: &VdiHeader, map: &mut BlockMap) -> Result<()> {
    let Some((lo, hi)) = map.dirty else {
        return storage.flush();
    };
    storage.flush()?;
    // Whole sectors of the map, so a torn write cannot mix entries across sectors we did not mean
    // to touch.
    let per = HEADER_SIZE / 4;
    let lo = lo / per * per;
    let hi = hi.div_ceil(per).saturating_mul(per).min(map.entries.len());
    let bmap_at = h.offset_bmap as u64;
    if bmap_at == HEADER_SIZE as u64 && bmap_at + hi as u64 * 4 <= PAGE {
        let mut page = h.encode().to_vec();
        page.extend_from_slice(&map.encode(0, hi));
        storage.write_at(&page, 0)?;
    } else {
        storage.write_at(&h.encode(), 0)?;
        storage.flush()?;
        storage.write_at(&map.encode(lo, hi), bmap_at + lo as u64 * 4)?;
    }
    storage.flush()?;
    map.dirty = None;
    Ok(())
}
