//! qcow2 persistent dirty bitmaps: the bitmaps extension and directory ([`dir`]), bitmap tables
//! ([`table`]), storing them back with the header rewritten ([`store`]), and the `qemu-img
//! bitmap` actions and write tracking ([`ops`]).
//!
//! The directory is parsed (and bounded) when the image opens; bitmap bits are loaded only when
//! needed. A writable open marks enabled (`auto`) bitmaps in use on disk, sets their bits on
//! every write, write-zeroes and discard, and stores them on close with the flag cleared, as
//! QEMU does. Bitmaps left in use by a crash are inconsistent: kept as they are, listed with the
//! `in-use` flag, refused by every action but `--remove`.
pub mod dir;
mod ops;
mod store;
pub mod table;

use super::header::{Header, AUTOCLEAR_BITMAPS};
use dir::{BitmapsExt, DirEntry};
use qimg_core::{BitmapData, BitmapInfo, Result, Storage};

/// One bitmap of an open image.
pub(in crate::qcow2) struct Bitmap {
    /// The directory entry as last stored (table offset 0 until a new bitmap is stored).
    pub entry: DirEntry,
    /// The bits, once loaded.
    pub data: Option<BitmapData>,
    /// The bits changed since they were stored: a new table must be written.
    pub changed: bool,
    /// The bitmap was in use when the image was opened.
    pub inconsistent: bool,
}

/// The bitmaps of an open image.
#[derive(Default)]
pub(in crate::qcow2) struct Bitmaps {
    /// In directory order.
    pub list: Vec<Bitmap>,
    /// The directory on disk: (offset, size); `None` when there is none.
    pub dir: Option<(u64, u64)>,
    /// Enabled bitmaps are marked in use on disk and track writes.
    pub tracking: bool,
    /// The directory must be rewritten (flags, names or entries changed).
    pub meta_dirty: bool,
    /// Host ranges (offset, clusters) to free once the new directory is referenced.
    pub frees: Vec<(u64, u64)>,
}

impl Bitmaps {
    /// Parse the bitmaps of an image (none unless version 3 with autoclear bit 0 and the
    /// extension present; QEMU ignores the extension otherwise).
    pub fn load(storage: &dyn Storage, h: &Header, file_size: u64) -> Result<Bitmaps> {
        let mut b = Bitmaps::default();
        let Some(body) = h.bitmaps_ext.as_ref() else {
            return Ok(b);
        };
        if h.version < 3 || h.autoclear & AUTOCLEAR_BITMAPS == 0 {
            return Ok(b);
        }
        let cs = h.cluster_size();
        let ext = BitmapsExt::parse(body, cs, file_size)?;
        let mut raw = vec![0u8; ext.dir_size as usize];
        storage.read_at(&mut raw, ext.dir_offset)?;
        let entries = dir::parse_directory(&raw, &ext, cs, h.size, file_size)?;
        b.dir = Some((ext.dir_offset, ext.dir_size));
        b.list = entries
            .into_iter()
            .map(|entry| Bitmap {
                inconsistent: entry.in_use(),
                entry,
                data: None,
                changed: false,
            })
            .collect();
        Ok(b)
    }

    /// The list `qemu-img info` shows.
    pub fn infos(&self) -> Vec<BitmapInfo> {
        self.list
            .iter()
            .map(|b| BitmapInfo {
                name: b.entry.name_str(),
                granularity: 1 << b.entry.granularity_bits,
                auto: b.entry.auto(),
                in_use: b.entry.in_use(),
            })
            .collect()
    }

    /// Set the bits of every tracking bitmap for a guest write to `[offset, offset+len)`.
    pub fn mark(&mut self, offset: u64, len: u64) {
        if !self.tracking {
            return;
        }
        for b in &mut self.list {
            if b.entry.auto() && !b.inconsistent {
                if let Some(d) = b.data.as_mut() {
                    d.mark(offset, len);
                    b.changed = true;
                }
            }
        }
    }
}

/// `format-specific` JSON for a list of bitmaps, as `qemu-img info --output=json` prints it.
pub fn info_json(list: &[BitmapInfo]) -> serde_json::Value {
    list.iter()
        .map(|b| {
            let mut flags = Vec::new();
            if b.in_use {
                flags.push("in-use");
            }
            if b.auto {
                flags.push("auto");
            }
            serde_json::json!({ "flags": flags, "name": b.name, "granularity": b.granularity })
        })
        .collect()
}

/// Bytes persistent bitmaps need in a qcow2 image of `virtual_size` bytes and `cluster_size`
/// clusters (`qemu-img measure`'s `bitmaps` field): per bitmap its data clusters and its
/// table, plus the directory, each rounded up to whole clusters.
pub fn measure_bitmaps(list: &[BitmapInfo], virtual_size: u64, cluster_size: u64) -> u64 {
    let mut total = 0u64;
    let mut dir = 0u64;
    for b in list {
        let bits = virtual_size.div_ceil(b.granularity);
        let clusters = bits.div_ceil(cluster_size * 8);
        total += clusters * cluster_size + (clusters * 8).div_ceil(cluster_size) * cluster_size;
        dir += dir::entry_len(b.name.len(), 0) as u64;
    }
    total + dir.div_ceil(cluster_size) * cluster_size
}
