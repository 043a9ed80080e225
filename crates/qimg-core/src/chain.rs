//! Helpers over a driver and its backing chain: `qemu-img map`-style extents.
use crate::driver::{BlockDriver, LayerStatus};
use crate::error::Result;

/// One extent as `qemu-img map --output=json` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapExtent {
    /// Guest offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// Layer index that decided this range (0 = top).
    pub depth: u32,
    /// True if some layer of the chain allocates this range (false: reads as zeros by default).
    pub present: bool,
    /// Reads as zeros.
    pub zero: bool,
    /// Backed by data in some layer.
    pub data: bool,
    /// Stored compressed.
    pub compressed: bool,
    /// Host offset in the deciding layer's storage, when meaningful.
    pub offset: Option<u64>,
}

impl MapExtent {
    /// A range no layer allocates: reads as zeros, decided at `depth`.
    fn absent(start: u64, length: u64, depth: u32) -> Self {
        MapExtent {
            start,
            length,
            depth,
            present: false,
            zero: true,
            data: false,
            compressed: false,
            offset: None,
        }
    }
}

/// Walk the chain below `top` for the range `[offset, offset+length)` and return the extents of the
/// first call's worth (a prefix of the range may be returned; call again for the rest). Adjacent
/// extents with the same flags and contiguous host offsets are merged by the caller if wanted.
pub fn map_extents(top: &dyn BlockDriver, offset: u64, length: u64) -> Result<Vec<MapExtent>> {
    let mut out = Vec::new();
    map_layer(top, offset, length, 0, &mut out)?;
    Ok(out)
}

fn map_layer(
    layer: &dyn BlockDriver,
    offset: u64,
    length: u64,
    depth: u32,
    out: &mut Vec<MapExtent>,
) -> Result<()> {
    let size = layer.virtual_size();
    if offset >= size {
        // Beyond a (shorter) backing file: reads as zeros, decided at this depth.
        out.push(MapExtent::absent(offset, length, depth));
        return Ok(());
    }
    let in_range = length.min(size - offset);
    let extents = layer.block_status(offset, in_range)?;
    for e in &extents {
        match e.status {
            LayerStatus::Data {
                host_offset,
                compressed,
                reads_zero,
            } => out.push(MapExtent {
                start: e.start,
                length: e.length,
                depth,
                present: true,
                zero: reads_zero,
                data: true,
                compressed,
                offset: host_offset,
            }),
            LayerStatus::Zero { host_offset } => out.push(MapExtent {
                start: e.start,
                length: e.length,
                depth,
                present: true,
                zero: true,
                data: false,
                compressed: false,
                offset: host_offset,
            }),
            LayerStatus::Unallocated => match layer.backing() {
                Some(b) => map_layer(b.as_ref(), e.start, e.length, depth + 1, out)?,
                None => out.push(MapExtent::absent(e.start, e.length, depth)),
            },
        }
    }
    Ok(())
}
