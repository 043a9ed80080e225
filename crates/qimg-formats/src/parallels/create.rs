//! Creating a Parallels image as `qemu-img create -f parallels` (QEMU 7.2+) writes it: a v2
//! ("WithouFreSpacExt") header, 16 heads × 32 sectors geometry, a zeroed BAT padded to a whole
//! number of clusters, and nothing else (the data area starts empty).
//!
//! Checked against qemu-img 10.0: the size is rounded up to 512; `cluster_size` (default 1 MiB)
//! is taken in whole sectors; a size of 2^32 clusters or more is refused with "Image size is too
//! large for this cluster size". qimg also refuses clusters over 64 MiB (QEMU accepts them, but
//! qimg bounds every cluster buffer). `preallocation=` belongs to the file protocol: qemu-img
//! accepts off/falloc/full without effect on the final image (the driver rewrites the file) and
//! refuses `metadata`; so does qimg.
use super::header::{Header, HEADER_SIZE, MAX_CLUSTER, SECTOR};
use crate::options::CreateOptions;
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// Default cluster size (QEMU's `DEFAULT_CLUSTER_SIZE`).
pub const DEFAULT_CLUSTER: u64 = 1 << 20;

/// Write a new, empty Parallels image of `opts.size` bytes into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'parallels' does not support backing files",
        ));
    }
    if opts.preallocation == crate::options::Preallocation::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let cs = opts.cluster_size.unwrap_or(DEFAULT_CLUSTER) / SECTOR * SECTOR;
    let size = opts
        .size
        .checked_next_multiple_of(SECTOR)
        .ok_or_else(|| Error::invalid("Image size is too large"))?;
    if cs == 0 || size / cs >= 1 << 32 {
        return Err(Error::invalid(
            "Image size is too large for this cluster size",
        ));
    }
    if cs > MAX_CLUSTER {
        return Err(Error::invalid(format!(
            "Cluster size is too large for qimg (at most {MAX_CLUSTER} bytes)"
        )));
    }
    let sectors = size / SECTOR;
    let bat_entries = size.div_ceil(cs);
    let bat_bytes = HEADER_SIZE + 4 * bat_entries;
    let data_start = bat_bytes.next_multiple_of(cs);
    let h = Header {
        ext: true,
        heads: 16,
        cylinders: u32::try_from(sectors / 16 / 32)
            .map_err(|_| Error::invalid("Image size is too large"))?,
        tracks: (cs / SECTOR) as u32,
        bat_entries: bat_entries as u32,
        nb_sectors: sectors,
        in_use: 0,
        data_off: u32::try_from(data_start / SECTOR)
            .map_err(|_| Error::invalid("Image size is too large"))?,
        flags: 0,
        ext_off: 0,
    };
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    storage.truncate(data_start)?;
    storage.write_at(&h.encode(), 0)?;
    storage.flush()
}
