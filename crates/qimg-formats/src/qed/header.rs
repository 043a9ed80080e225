//! The QED header and its bounds, as QEMU's `block/qed.c` checks them on open.
//!
//! On-disk layout (little-endian), from QEMU's docs/interop/qed_spec.txt:
//!
//! ```text
//! Header {
//!     uint32_t magic;               /* QED\0 */
//!     uint32_t cluster_size;        /* in bytes */
//!     uint32_t table_size;          /* for L1 and L2 tables, in clusters */
//!     uint32_t header_size;         /* in clusters */
//!     uint64_t features;            /* format feature bits */
//!     uint64_t compat_features;     /* compatible feature bits */
//!     uint64_t autoclear_features;  /* self-resetting feature bits */
//!     uint64_t l1_table_offset;     /* in bytes */
//!     uint64_t image_size;          /* total logical image size, in bytes */
//!     /* if (features & QED_F_BACKING_FILE) */
//!     uint32_t backing_filename_offset; /* in bytes from start of header */
//!     uint32_t backing_filename_size;   /* in bytes */
//! }
//! ```
use qimg_core::{Error, Result};

/// `QED\0` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"QED\0");
/// Bytes of the fixed header (with the backing file fields).
pub const HEADER_LEN: usize = 64;
/// The image has a backing file.
pub const F_BACKING_FILE: u64 = 1;
/// The image was not closed cleanly: check its tables before writing.
pub const F_NEED_CHECK: u64 = 2;
/// The backing file is raw; do not probe it.
pub const F_BACKING_FORMAT_NO_PROBE: u64 = 4;
/// Every feature bit QEMU knows.
pub const FEATURE_MASK: u64 = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE;
/// Smallest cluster size QEMU accepts.
pub const MIN_CLUSTER_SIZE: u64 = 4096;
/// Largest cluster size QEMU accepts.
pub const MAX_CLUSTER_SIZE: u64 = 64 << 20;
/// Default cluster size.
pub const DEFAULT_CLUSTER_SIZE: u64 = 64 << 10;
/// Largest table size, in clusters.
pub const MAX_TABLE_SIZE: u64 = 16;
/// Default table size, in clusters.
pub const DEFAULT_TABLE_SIZE: u64 = 4;
/// Longest backing file name QEMU reads (its `backing_file` buffer is 4096 bytes with the NUL).
pub const MAX_BACKING_NAME: u32 = 4095;
/// An L2 entry meaning "reads as zeros" (QEMU's `QED_CLUSTER_ZERO`).
pub const ZERO_CLUSTER: u64 = 1;

/// A parsed QED header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QedHeader {
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// L1/L2 table size in clusters.
    pub table_size: u64,
    /// Header size in clusters.
    pub header_size: u64,
    /// Incompatible feature bits.
    pub features: u64,
    /// Compatible feature bits.
    pub compat_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// Byte offset of the L1 table.
    pub l1_table_offset: u64,
    /// Virtual size in bytes.
    pub image_size: u64,
    /// Byte offset of the backing file name from the start of the header.
    pub backing_filename_offset: u32,
    /// Length of the backing file name.
    pub backing_filename_size: u32,
}

/// True if `cs` is a cluster size QEMU accepts (a power of two, 4 KiB..64 MiB).
pub fn cluster_size_valid(cs: u64) -> bool {
    cs.is_power_of_two() && (MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cs)
}

/// True if `ts` is a table size QEMU accepts (a power of two, 1..16 clusters).
pub fn table_size_valid(ts: u64) -> bool {
    ts.is_power_of_two() && ts <= MAX_TABLE_SIZE
}

/// The largest image size QEMU accepts for a geometry (its `qed_max_image_size`). QEMU computes
/// it in 64-bit arithmetic that wraps for large geometries (e.g. 64 MiB clusters with 1-cluster
/// tables, or 4 MiB clusters with 16-cluster tables, give 0), and then refuses every non-empty
/// image; qimg wraps the same way so that every image it accepts QEMU accepts too.
pub fn max_image_size(cluster_size: u64, table_size: u64) -> u64 {
    let entries = table_size * cluster_size / 8;
    entries.wrapping_mul(cluster_size).wrapping_mul(entries)
}

/// True if `size` is a multiple of 512 within what the geometry addresses.
pub fn image_size_valid(size: u64, cluster_size: u64, table_size: u64) -> bool {
    size.is_multiple_of(512) && size <= max_image_size(cluster_size, table_size)
}

impl QedHeader {
    /// Decode the first [`HEADER_LEN`] bytes, checking every bound QEMU checks before reading
    /// tables. `file_size` is the host file size rounded down to a whole cluster by the caller
    /// after the cluster size is known, so it is passed as the raw length here.
    pub fn parse(b: &[u8], file_len: u64) -> Result<Self> {
        if b.len() < HEADER_LEN {
            return Err(Error::corrupt("Image not in QED format"));
        }
        let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if u32at(0) != MAGIC {
            return Err(Error::new(
                qimg_core::ErrorCode::WrongFormat,
                "Image not in QED format",
            ));
        }
        let h = QedHeader {
            cluster_size: u32at(4) as u64,
            table_size: u32at(8) as u64,
            header_size: u32at(12) as u64,
            features: u64at(16),
            compat_features: u64at(24),
            autoclear_features: u64at(32),
            l1_table_offset: u64at(40),
            image_size: u64at(48),
            backing_filename_offset: u32at(56),
            backing_filename_size: u32at(60),
        };
        if h.features & !FEATURE_MASK != 0 {
            return Err(Error::unsupported(format!(
                "Unsupported QED features: {:#x}",
                h.features & !FEATURE_MASK
            )));
        }
        if !cluster_size_valid(h.cluster_size) {
            return Err(Error::corrupt(format!(
                "QED cluster size {} is invalid (a power of two from 4096 to 67108864)",
                h.cluster_size
            )));
        }
        if !table_size_valid(h.table_size) {
            return Err(Error::corrupt(format!(
                "QED table size {} is invalid (a power of two from 1 to 16)",
                h.table_size
            )));
        }
        if !image_size_valid(h.image_size, h.cluster_size, h.table_size) {
            return Err(Error::corrupt(format!(
                "QED image size {} is invalid for this geometry",
                h.image_size
            )));
        }
        if h.header_size == 0 || h.header_size > u32::MAX as u64 / h.cluster_size {
            return Err(Error::corrupt(format!(
                "QED header size {} clusters is invalid",
                h.header_size
            )));
        }
        let file_size = file_len & !(h.cluster_size - 1);
        if !h.table_offset_valid(h.l1_table_offset, file_size) {
            return Err(Error::corrupt(format!(
                "QED table offset is invalid (L1 at {:#x})",
                h.l1_table_offset
            )));
        }
        if h.features & F_BACKING_FILE != 0 {
            let end = h.backing_filename_offset as u64 + h.backing_filename_size as u64;
            if end > h.cluster_size * h.header_size {
                return Err(Error::corrupt(
                    "QED backing file name lies outside the header",
                ));
            }
            if h.backing_filename_size > MAX_BACKING_NAME {
                return Err(Error::corrupt("QED backing file name is too long"));
            }
        }
        Ok(h)
    }

    /// Encode into [`HEADER_LEN`] bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(self.cluster_size as u32).to_le_bytes());
        b[8..12].copy_from_slice(&(self.table_size as u32).to_le_bytes());
        b[12..16].copy_from_slice(&(self.header_size as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.features.to_le_bytes());
        b[24..32].copy_from_slice(&self.compat_features.to_le_bytes());
        b[32..40].copy_from_slice(&self.autoclear_features.to_le_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.image_size.to_le_bytes());
        b[56..60].copy_from_slice(&self.backing_filename_offset.to_le_bytes());
        b[60..64].copy_from_slice(&self.backing_filename_size.to_le_bytes());
        b
    }

    /// Bytes in one L1 or L2 table.
    pub fn table_bytes(&self) -> u64 {
        self.table_size * self.cluster_size
    }

    /// Entries in one table.
    pub fn table_entries(&self) -> u64 {
        self.table_bytes() / 8
    }

    /// QEMU's `qed_check_cluster_offset`: cluster-aligned, past the header, inside the file.
    pub fn cluster_offset_valid(&self, offset: u64, file_size: u64) -> bool {
        offset & (self.cluster_size - 1) == 0
            && offset >= self.header_size * self.cluster_size
            && offset < file_size
    }

    /// QEMU's `qed_check_table_offset`: a whole table inside the file. (QEMU's own version
    /// also refuses every one-cluster table, so it cannot open the `table_size=1` images it
    /// creates; qimg accepts them.)
    pub fn table_offset_valid(&self, offset: u64, file_size: u64) -> bool {
        match offset.checked_add(self.table_bytes() - 1) {
            Some(last) => {
                self.cluster_offset_valid(offset, file_size)
                    && self.cluster_offset_valid(last & !(self.cluster_size - 1), file_size)
            }
            None => false,
        }
    }
}
