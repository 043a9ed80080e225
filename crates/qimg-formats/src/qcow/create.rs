//! Creating a qcow (v1) image as QEMU's `qcow_co_create`: the 48-byte header, the backing file
//! name after it, and a zeroed L1 table at the next 8-byte boundary, written in whole 512-byte
//! sectors. Without a backing file clusters are 4 KiB with 512-entry L2 tables; with one, QEMU
//! picks 512-byte clusters (so a guest sector write never copies backing data) and 4096-entry
//! L2 tables. qcow does not store the backing format. `encrypt.format=aes` only sets the
//! header's `crypt_method` (the key is never stored: QEMU derives it from the passphrase).
use super::header::{QcowHeader, HEADER_LEN};
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// Write a new, empty qcow image into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.preallocation == Preallocation::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let size = opts
        .size
        .checked_next_multiple_of(512)
        .ok_or_else(|| Error::invalid("Image size is too large"))?;
    let name = opts.backing_file.as_deref().unwrap_or("");
    if name.len() > super::header::MAX_BACKING_NAME as usize {
        return Err(Error::invalid("Backing file name too long"));
    }
    let (cluster_bits, l2_bits) = if opts.backing_file.is_some() {
        (9, 12)
    } else {
        (12, 9)
    };
    let header_end = (HEADER_LEN + name.len()).next_multiple_of(8) as u64;
    let h = QcowHeader {
        backing_file_offset: if name.is_empty() {
            0
        } else {
            HEADER_LEN as u64
        },
        backing_file_size: name.len() as u32,
        mtime: 0,
        size,
        cluster_bits,
        l2_bits,
        crypt_method: match opts.encryption.format.as_deref() {
            None => 0,
            Some("aes") if opts.encryption.key.is_some() => super::header::CRYPT_AES,
            Some("aes") => {
                return Err(Error::invalid(
                    "Parameter 'encrypt.key-secret' is required for cipher",
                ))
            }
            Some(_) => return Err(Error::invalid("Unsupported encryption format")),
        },
        l1_table_offset: header_end,
    };
    if h.l1_entries() > i32::MAX as u64 / 8 {
        return Err(Error::invalid("Image too large"));
    }
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    storage.write_at(&h.encode(), 0)?;
    if !name.is_empty() {
        storage.write_at(name.as_bytes(), HEADER_LEN as u64)?;
    }
    let l1_bytes = (h.l1_entries() * 8).next_multiple_of(512);
    let chunk = vec![0u8; l1_bytes.clamp(512, 1 << 20) as usize];
    let mut pos = 0;
    while pos < l1_bytes {
        let n = (l1_bytes - pos).min(chunk.len() as u64) as usize;
        storage.write_at(&chunk[..n], header_end + pos)?;
        pos += n as u64;
    }
    Ok(())
}
