//! Creating a VHD as `qemu-img create -f vpc` does (checked against qemu-img 10.0).
//!
//! The size becomes the smallest CHS geometry covering it (so 100 MiB is 104865792 bytes) unless
//! `force_size=on` (creator "qem2", largest geometry, size as given) or no geometry fits.
//! Dynamic: footer copy at 0, dynamic header at 512, BAT at 1536 (2 MiB blocks, all
//! unallocated, padded to a sector), footer after it. Fixed: the guest bytes (a sparse file) and
//! the footer after them. `preallocation=` belongs to the file protocol: accepted, no effect,
//! `metadata` refused, as qemu-img.
use super::header::{
    create_geometry, DynHeader, Footer, DEFAULT_BLOCK_SIZE, FOOTER_SIZE, TYPE_DYNAMIC, TYPE_FIXED,
};
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// Write a new VHD of `opts.size` bytes into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'vpc' does not support backing files",
        ));
    }
    if opts.preallocation == Preallocation::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let fixed = match opts.subformat.as_deref() {
        None | Some("dynamic") => false,
        Some("fixed") => true,
        Some(other) => {
            return Err(Error::invalid(format!(
                "Parameter 'subformat' does not accept value '{other}'"
            )));
        }
    };
    let (geometry, size) = create_geometry(opts.size, opts.force_size)?;
    let ty = if fixed { TYPE_FIXED } else { TYPE_DYNAMIC };
    let footer = Footer::new(size, geometry, ty, opts.force_size);
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    if fixed {
        storage.truncate(size)?;
        return storage.write_at(&footer.raw, size);
    }
    let block = DEFAULT_BLOCK_SIZE as u64;
    let entries = (size / 512).div_ceil(block / 512) as u32;
    let bat_bytes = (entries as u64 * 4).next_multiple_of(512);
    storage.write_at(&footer.raw, 0)?;
    storage.write_at(
        &DynHeader::encode_new(entries, DEFAULT_BLOCK_SIZE),
        FOOTER_SIZE as u64,
    )?;
    storage.write_at(&vec![0xffu8; bat_bytes as usize], 1536)?;
    storage.write_at(&footer.raw, 1536 + bat_bytes)
}
