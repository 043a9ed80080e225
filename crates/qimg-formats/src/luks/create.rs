//! Creating a LUKS1 image as `qemu-img create -f luks` does: header and key material for slot 0
//! (QEMU's layout, see `qimg_crypto::luks1::create`), then the payload area sized to the guest
//! size (rounded up to 512) with the preallocation asked for. As in QEMU, a new image's guest
//! contents are whatever the never-written payload decrypts to, not zeros.
use super::header::StorageIo;
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use qimg_crypto::luks1::{self, Luks1Params};
use std::sync::Arc;

/// Write a new LUKS1 image into `storage` (empty).
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'luks' does not support backing files",
        ));
    }
    let key = opts
        .encryption
        .key
        .as_ref()
        .ok_or_else(super::driver::key_required)?
        .as_bytes();
    let (spec, hash) = super::options::resolve(&opts.encryption)?;
    let mut params = Luks1Params::new(spec, hash);
    params.iter_time_ms = super::options::iter_time_ms(&opts.encryption)?;
    let size = opts
        .size
        .checked_next_multiple_of(512)
        .ok_or_else(|| Error::invalid("Image size is too large"))?;
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    let io = StorageIo {
        storage: &*storage,
        base: 0,
    };
    let (h, _mk) = luks1::create(&params, key, &io)?;
    let payload = h.payload_offset_bytes();
    let total = payload
        .checked_add(size)
        .ok_or_else(|| Error::invalid("Image size is too large"))?;
    match opts.preallocation {
        Preallocation::Off => storage.truncate(total)?,
        Preallocation::Falloc => storage.allocate(payload, size)?,
        Preallocation::Full => {
            storage.truncate(total)?;
            let chunk = vec![0u8; (1u64 << 20).min(size.max(1)) as usize];
            let mut pos = payload;
            while pos < total {
                let n = (total - pos).min(chunk.len() as u64) as usize;
                storage.write_at(&chunk[..n], pos)?;
                pos += n as u64;
            }
        }
        Preallocation::Metadata => {
            return Err(Error::invalid("Unsupported preallocation mode: metadata"))
        }
    }
    storage.flush()
}
