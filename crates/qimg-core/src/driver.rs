//! The format layer: a driver maps guest ranges of one image onto its storage.
//!
//! Drivers see one layer. A driver with a backing file is given the opened backing driver by the
//! graph builder (TypeScript, through the implicit-open gate) with [`BlockDriver::set_backing`]; reads
//! of unallocated ranges fall through to it. [`crate::chain`] composes block status across layers.
use crate::error::{Error, Result};
use std::sync::Arc;

/// What one layer says about a guest range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// Data stored in this layer; `host_offset` is where it starts in the storage when the data is
    /// stored contiguously and uncompressed (`None` otherwise).
    Data {
        /// Host byte offset of the first byte, when meaningful.
        host_offset: Option<u64>,
        /// True if the data is stored compressed.
        compressed: bool,
        /// True if the layer below (the host file) reports the range as a hole: allocated here,
        /// but reading as zeros (QEMU's DATA|ZERO, e.g. metadata-preallocated qcow2 clusters).
        reads_zero: bool,
    },
    /// Reads as zeros, decided by this layer (a zero cluster, or a hole in a raw file).
    /// `host_offset` is set when space stays allocated (a preallocated zero cluster).
    Zero {
        /// Host byte offset of preallocated space, if any.
        host_offset: Option<u64>,
    },
    /// Not allocated in this layer: the backing layer decides (zeros without one).
    Unallocated,
}

/// A run of guest bytes with one status in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerExtent {
    /// Guest byte offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// What the layer holds there.
    pub status: LayerStatus,
}

/// How `check` may repair an image (`qemu-img check -r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Report only.
    None,
    /// Repair leaked clusters only.
    Leaks,
    /// Repair leaks and errors.
    All,
}

/// The result of a consistency check, with qemu-img's `ImageCheck` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Corruptions found (and not fixed).
    pub corruptions: u64,
    /// Leaked clusters found (and not fixed).
    pub leaks: u64,
    /// Internal errors during the check (I/O errors reading metadata).
    pub check_errors: u64,
    /// Corruptions fixed.
    pub corruptions_fixed: u64,
    /// Leaks fixed.
    pub leaks_fixed: u64,
    /// End offset of the image's used host space.
    pub image_end_offset: Option<u64>,
    /// Clusters covering the virtual disk.
    pub total_clusters: Option<u64>,
    /// Guest clusters allocated in this layer.
    pub allocated_clusters: Option<u64>,
    /// Allocated clusters not contiguous with their predecessor.
    pub fragmented_clusters: Option<u64>,
    /// Compressed clusters.
    pub compressed_clusters: Option<u64>,
    /// Human-readable findings, one line each, as qemu-img prints them ("Leaked cluster 5 refcount=1 reference=0").
    pub messages: Vec<String>,
}

/// Static facts a driver reports for `info`.
#[derive(Debug, Clone, Default)]
pub struct DriverInfo {
    /// Cluster (or block) size, when the format has one.
    pub cluster_size: Option<u64>,
    /// True if the image is marked dirty (e.g. qcow2 lazy refcounts left dirty).
    pub dirty: bool,
    /// Backing file name as stored in the image.
    pub backing_file: Option<String>,
    /// Backing format as stored in the image.
    pub backing_format: Option<String>,
    /// qemu-img's `format-specific` object (`{"type": "...", "data": {...}}`), if any.
    pub format_specific: Option<serde_json::Value>,
}

/// A compressed cluster as stored: lets convert copy it without inflating and deflating again.
#[derive(Debug, Clone)]
pub struct CompressedCluster {
    /// The format's compression type (qcow2: 0 zlib, 1 zstd).
    pub kind: u8,
    /// Guest bytes the data inflates to (the cluster size).
    pub cluster_size: u64,
    /// The stored bytes: the compressed stream, possibly followed by padding up to a 512-byte
    /// sector boundary (decoders stop once the cluster is full).
    pub data: Vec<u8>,
}

/// One opened image in one format.
pub trait BlockDriver: Send + Sync {
    /// The format name (`raw`, `qcow2`, …).
    fn format_name(&self) -> &'static str;
    /// The storage under this driver.
    fn storage(&self) -> &Arc<dyn crate::Storage>;
    /// Guest size in bytes.
    fn virtual_size(&self) -> u64;
    /// Read guest bytes; ranges beyond the virtual size are an error.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Write guest bytes.
    fn write(&self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Write guest bytes and make them durable before returning (FUA). Default, as QEMU
    /// emulates FUA for formats: the write, then a flush of this image; raw passes FUA down
    /// to its storage (on NBD, a write with `NBD_CMD_FLAG_FUA`).
    fn write_fua(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.write(offset, buf)?;
        self.flush()
    }
    /// Make a guest range read as zeros. With `may_unmap`, space may be freed.
    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()>;
    /// Discard a guest range (its contents become unspecified-but-stable; qimg makes them read
    /// as zeros or as the backing file, as QEMU does).
    fn discard(&self, offset: u64, length: u64) -> Result<()>;
    /// This layer's status of `[offset, offset+length)`: a non-empty list of consecutive extents
    /// starting at `offset`, covering at most `length` bytes (a prefix is allowed).
    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>>;
    /// Make completed writes durable (data, then metadata).
    fn flush(&self) -> Result<()>;
    /// Flush, clear any dirty/in-use marks, and stop accepting I/O.
    fn close(&self) -> Result<()>;
    /// Facts for `info`.
    fn info(&self) -> Result<DriverInfo>;
    /// True if guest data is encrypted (qemu-img `info`'s `encrypted: yes`).
    fn encrypted(&self) -> bool {
        false
    }
    /// Check (and optionally repair) consistency.
    fn check(&self, _repair: RepairMode) -> Result<CheckReport> {
        Err(Error::unsupported(format!(
            "This image format ({}) does not support checks",
            self.format_name()
        )))
    }
    /// Change the virtual size.
    fn resize(&self, _new_size: u64) -> Result<()> {
        Err(Error::unsupported(format!(
            "Image format {} does not support resize",
            self.format_name()
        )))
    }
    /// Change the virtual size as `qemu-img resize` does, preallocating the grown area with
    /// QEMU's mode (`off`, `metadata`, `falloc`, `full`). Shrinking never preallocates.
    fn truncate(&self, new_size: u64, prealloc: &str) -> Result<()> {
        if prealloc != "off" {
            return Err(Error::unsupported(format!(
                "Unsupported preallocation mode: {prealloc}"
            )));
        }
        self.resize(new_size)
    }
    /// `qemu-img amend`: change format options in place (`compat`, `lazy_refcounts`,
    /// `refcount_bits`, …) given as validated `(name, value)` pairs.
    fn amend(&self, _options: &[(String, String)]) -> Result<()> {
        Err(Error::unsupported(format!(
            "Format driver '{}' does not support option amendment",
            self.format_name()
        )))
    }
    /// Cluster size of compressed writes, or `None` if the format cannot store compressed data.
    fn compressed_cluster_size(&self) -> Option<u64> {
        None
    }
    /// Write one whole cluster (the image's last, partial cluster is zero-padded) compressed, at
    /// `level` (the format's default when `None`). Safe to call from several threads at once.
    fn write_compressed(&self, _offset: u64, _data: &[u8], _level: Option<u32>) -> Result<()> {
        Err(Error::unsupported(format!(
            "Compression not supported for this file format ({})",
            self.format_name()
        )))
    }
    /// The stored bytes of the compressed cluster at guest `offset` in this layer, if that cluster
    /// is stored compressed here; `None` otherwise (plain data, zeros, unallocated).
    fn read_compressed_raw(&self, _offset: u64) -> Result<Option<CompressedCluster>> {
        Ok(None)
    }
    /// Store an already-compressed cluster (from [`Self::read_compressed_raw`] of another image)
    /// at guest `offset` without recompressing. Returns `false`, writing nothing, when this image
    /// cannot hold it as is (another compression type or cluster size).
    fn write_compressed_raw(&self, _offset: u64, _cluster: &CompressedCluster) -> Result<bool> {
        Ok(false)
    }
    /// Change the backing file reference stored in the image (`None` removes it), flushing
    /// everything written before (`rebase`). Formats without backing files refuse.
    fn set_backing_file(&self, _name: Option<&str>, _format: Option<&str>) -> Result<()> {
        Err(Error::unsupported(format!(
            "Image format {} does not support backing files: Operation not supported",
            self.format_name()
        )))
    }
    /// Make the whole image unallocated in this layer, so it reads through to its backing file
    /// (`commit` empties the top image this way).
    fn make_empty(&self) -> Result<()> {
        Err(Error::unsupported(format!(
            "Image format {} cannot be emptied: Operation not supported",
            self.format_name()
        )))
    }
    /// Internal snapshots of this image (an empty list for formats without them).
    fn snapshots(&self) -> Result<Vec<crate::SnapshotInfo>> {
        Ok(Vec::new())
    }
    /// Take an internal snapshot of the active layer named `name` (a new ID is chosen).
    fn snapshot_create(&self, _name: &str) -> Result<crate::SnapshotInfo> {
        Err(Error::unsupported("Operation not supported"))
    }
    /// Make the active layer a copy of the selected snapshot (`qemu-img snapshot -a`).
    fn snapshot_apply(&self, _sel: crate::SnapshotSelector<'_>) -> Result<()> {
        Err(Error::unsupported("Operation not supported"))
    }
    /// Delete the selected snapshot (`qemu-img snapshot -d`).
    fn snapshot_delete(&self, _sel: crate::SnapshotSelector<'_>) -> Result<()> {
        Err(Error::unsupported("Operation not supported"))
    }
    /// A read-only driver showing the selected snapshot's contents (`convert -l`).
    fn snapshot_view(&self, _sel: crate::SnapshotSelector<'_>) -> Result<Arc<dyn BlockDriver>> {
        Err(Error::unsupported("Operation not supported"))
    }
    /// Attach the external data file holding this image's guest data (qcow2 `data_file`),
    /// opened by the graph builder through the implicit-open gate.
    fn set_data_file(&self, _data: Option<Arc<dyn crate::Storage>>) -> Result<()> {
        Err(Error::invalid(format!(
            "{} images have no external data file",
            self.format_name()
        )))
    }
    /// The backing layer given with [`Self::set_backing`], if any.
    fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        None
    }
    /// Attach (or detach) the backing layer; called by the graph builder before I/O.
    fn set_backing(&self, backing: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        match backing {
            None => Ok(()),
            Some(_) => Err(Error::unsupported(format!(
                "{} images have no backing file",
                self.format_name()
            ))),
        }
    }
    /// Persistent dirty bitmaps stored in the image (none for formats without them).
    fn bitmaps(&self) -> Result<Vec<crate::BitmapInfo>> {
        Ok(Vec::new())
    }
    /// Apply `qemu-img bitmap` actions in order and store the result durably.
    fn bitmap_apply(&self, _actions: &[crate::BitmapAction]) -> Result<()> {
        Err(Error::unsupported(format!(
            "Can't store persistent bitmaps in {} images",
            self.format_name()
        )))
    }
    /// The contents of persistent bitmap `name`.
    fn bitmap_read(&self, name: &str) -> Result<crate::BitmapData> {
        Err(Error::new(
            crate::ErrorCode::NotFound,
            format!("Dirty bitmap '{name}' not found"),
        ))
    }
    /// Extent files the image names and still needs (VMDK descriptors), as written in the image:
    /// the graph builder admits each through the implicit-open gate, then attaches them.
    fn extent_files(&self) -> Vec<String> {
        Vec::new()
    }
    /// Attach the files named by [`BlockDriver::extent_files`], in the same order.
    fn attach_extents(&self, _files: Vec<Arc<dyn crate::Storage>>) -> Result<()> {
        Err(Error::unsupported(format!(
            "{} images have no extent files",
            self.format_name()
        )))
    }
}
