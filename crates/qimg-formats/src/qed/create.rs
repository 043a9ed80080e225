//! Creating a QED image as QEMU's `bdrv_qed_co_create` does: a one-cluster header (with the
//! backing file name right after the 64-byte header fields), then an empty L1 table of
//! `table_size` clusters at offset `cluster_size`.
//!
//! `backing_fmt=raw` sets the no-probe feature; any other backing format is not stored (QEMU
//! probes it on open). `preallocation` is a file-protocol option that QEMU applies to the empty
//! file before the header is written, so it allocates nothing; `metadata` is refused.
use super::header::{self, QedHeader};
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// Write a new, empty QED image into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.preallocation == Preallocation::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let cs = opts.cluster_size.unwrap_or(header::DEFAULT_CLUSTER_SIZE);
    let ts = opts.table_size.unwrap_or(header::DEFAULT_TABLE_SIZE);
    if !header::cluster_size_valid(cs) {
        return Err(Error::invalid(
            "QED cluster size must be within range [4096, 67108864] and power of 2",
        ));
    }
    if !header::table_size_valid(ts) || ts == 0 {
        return Err(Error::invalid(
            "QED table size must be within range [1, 16] and power of 2",
        ));
    }
    // qemu-img rounds the size up to a whole sector before the driver sees it.
    let size = opts
        .size
        .checked_next_multiple_of(512)
        .ok_or_else(|| Error::invalid("Image size is too large"))?;
    if !header::image_size_valid(size, cs, ts) {
        return Err(Error::invalid(format!(
            "QED image size must be a non-zero multiple of cluster size and less than {} bytes",
            header::max_image_size(cs, ts)
        )));
    }
    let mut h = QedHeader {
        cluster_size: cs,
        table_size: ts,
        header_size: 1,
        features: 0,
        compat_features: 0,
        autoclear_features: 0,
        l1_table_offset: cs,
        image_size: size,
        backing_filename_offset: 0,
        backing_filename_size: 0,
    };
    let name = opts.backing_file.as_deref().unwrap_or("");
    if opts.backing_file.is_some() {
        if name.len() as u64 > cs - header::HEADER_LEN as u64 {
            return Err(Error::invalid("Backing file name too long"));
        }
        h.features |= header::F_BACKING_FILE;
        h.backing_filename_offset = header::HEADER_LEN as u32;
        h.backing_filename_size = name.len() as u32;
        if opts.backing_fmt.as_deref() == Some("raw") {
            h.features |= header::F_BACKING_FORMAT_NO_PROBE;
        }
    }
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    storage.write_at(&h.encode(), 0)?;
    if !name.is_empty() {
        storage.write_at(name.as_bytes(), header::HEADER_LEN as u64)?;
    }
    // QEMU writes the zeroed L1 table; write it in bounded chunks (tables reach 1 GiB).
    let l1_bytes = h.table_bytes();
    let chunk = vec![0u8; l1_bytes.min(1 << 20) as usize];
    let mut pos = 0;
    while pos < l1_bytes {
        let n = (l1_bytes - pos).min(chunk.len() as u64) as usize;
        storage.write_at(&chunk[..n], cs + pos)?;
        pos += n as u64;
    }
    Ok(())
}
