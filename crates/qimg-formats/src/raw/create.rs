//! Creating a raw image: size the file, preallocate as asked — what QEMU's file-posix
//! `raw_co_create` does for `qemu-img create -f raw`.
//!
//! Checked against qemu-img 10.0 (`strace`, `stat`, `qemu-img map --output=json`):
//! - the size is rounded up to a multiple of 512;
//! - `off`: `ftruncate`, then zeros written over the first block (4096 bytes, or 512 when the
//!   image is smaller), so `map` shows the first 4 KiB as data and 8 blocks are allocated;
//! - `falloc`: `fallocate` over the whole file, then the same first-block write;
//! - `full`: zeros written over the whole file;
//! - `metadata`: refused, "Unsupported preallocation mode: metadata".
//!
//! QEMU writes the first block so later alignment probing of the file reads real data; qimg does
//! it so that `qemu-img map` and `qemu-img info` (disk size) of a qimg-created raw image match a
//! qemu-img-created one. `nocow=on` belongs to the file protocol: the caller sets it on the
//! file ([`qimg_core::file::FileStorage::set_nocow`]) before calling [`create`].
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// QEMU's `BDRV_SECTOR_SIZE`: raw image sizes are rounded up to it.
const SECTOR: u64 = 512;
/// QEMU's `MAX_BLOCKSIZE`: the first block written after creation.
const FIRST_BLOCK: u64 = 4096;
/// Bound on the zero buffer used by `preallocation=full`.
const ZERO_CHUNK: u64 = 1 << 20;

/// Write a new raw image of `opts.size` bytes (rounded up to 512) into `storage`, which must be
/// empty or is emptied first. Backing files are refused (raw has no header to name one).
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'raw' does not support backing files",
        ));
    }
    if opts.preallocation == Preallocation::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let size = opts
        .size
        .checked_next_multiple_of(SECTOR)
        .ok_or_else(|| Error::invalid("Image size is too large"))?;
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    match opts.preallocation {
        Preallocation::Off => {
            storage.truncate(size)?;
            allocate_first_block(&*storage, size)
        }
        Preallocation::Falloc => {
            storage.allocate(0, size)?;
            allocate_first_block(&*storage, size)
        }
        Preallocation::Full => {
            storage.truncate(size)?;
            write_zeros(&*storage, size)
        }
        Preallocation::Metadata => unreachable!("refused above"),
    }
}

/// Write zeros over the first block of a new image, as QEMU's `allocate_first_block`: 4096 bytes,
/// or 512 when the image is smaller than 4096 bytes; nothing for an empty image.
fn allocate_first_block(storage: &dyn Storage, size: u64) -> Result<()> {
    if size == 0 {
        return Ok(());
    }
    let n = if size < FIRST_BLOCK {
        SECTOR
    } else {
        FIRST_BLOCK
    };
    storage.write_at(&vec![0u8; n as usize], 0)
}

/// Write zeros over `[0, size)` in chunks of at most [`ZERO_CHUNK`] bytes.
fn write_zeros(storage: &dyn Storage, size: u64) -> Result<()> {
    let chunk = vec![0u8; ZERO_CHUNK.min(size.max(1)) as usize];
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(chunk.len() as u64) as usize;
        storage.write_at(&chunk[..n], pos)?;
        storage.start_writeback();
        pos += n as u64;
    }
    Ok(())
}
