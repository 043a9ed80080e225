//! Creating a VDI image as `qemu-img create -f vdi` does (checked against qemu-img 10.0):
//! the size rounds up to 512 bytes; header at 0, block map at 512 (whole sectors), data after it.
//! Dynamic: every map entry unallocated, file ends after the map. `static=on`: entry `i` is slot
//! `i`, `blocks_allocated = blocks_in_image`, and the file is truncated (sparse) to cover every
//! block. `preallocation=` belongs to the file protocol; qemu-img accepts off/falloc/full for vdi
//! and leaves the file as above, and refuses `metadata`.
use super::header::{VdiHeader, DISK_SIZE_MAX, SECTOR};
use super::mapping::BlockMap;
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// Write a new VDI image of `opts.size` bytes into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'vdi' does not support backing files",
        ));
    }
    if opts.preallocation == Preallocation::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let size = opts.size.next_multiple_of(SECTOR);
    if size > DISK_SIZE_MAX {
        return Err(Error::invalid(format!(
            "Unsupported VDI image size (size is 0x{size:x}, max supported is 0x{DISK_SIZE_MAX:x})"
        )));
    }
    let h = VdiHeader::new(size, opts.static_image);
    let map = BlockMap::new(h.blocks_in_image, opts.static_image);
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    let mut bmap = map.encode(0, map.entries.len());
    bmap.resize(h.bmap_bytes() as usize, 0);
    storage.write_at(&h.encode(), 0)?;
    storage.write_at(&bmap, h.offset_bmap as u64)?;
    if opts.static_image {
        storage.truncate(h.block_offset(h.blocks_in_image))?;
    }
    Ok(())
}
