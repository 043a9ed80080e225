//! The qcow2 header and its extensions, with every field bounded before use.
//!
//! On-disk layout (big-endian; QEMU docs/interop/qcow2.txt):
//! ```text
//!   0 -  3  magic                    "QFI\xfb"
//!   4 -  7  version                  2 or 3
//!   8 - 15  backing_file_offset      0 = no backing file
//!  16 - 19  backing_file_size        at most 1023 bytes
//!  20 - 23  cluster_bits             9..=21
//!  24 - 31  size                     guest size in bytes
//!  32 - 35  crypt_method             0 none, 1 AES, 2 LUKS
//!  36 - 39  l1_size                  entries in the active L1 table
//!  40 - 47  l1_table_offset
//!  48 - 55  refcount_table_offset
//!  56 - 59  refcount_table_clusters
//!  60 - 63  nb_snapshots
//!  64 - 71  snapshots_offset
//! version 3 only:
//!  72 - 79  incompatible_features    bit 0 dirty, 1 corrupt, 2 external data file,
//!                                    3 compression type, 4 extended L2
//!  80 - 87  compatible_features      bit 0 lazy refcounts
//!  88 - 95  autoclear_features       bit 0 bitmaps, 1 raw external data
//!  96 - 99  refcount_order           refcount_bits = 1 << refcount_order, order 0..=6
//! 100 -103  header_length            104 or more
//! 104       compression_type         (if header_length > 104) 0 zlib, 1 zstd
//! ```
//! Header extensions follow the header (at 72 for v2, at header_length for v3):
//! `u32 type, u32 length, data padded to 8 bytes`; type 0 ends the list. Known types:
//! 0xe2792aca backing format name, 0x6803f857 feature name table, 0x23852875 bitmaps,
//! 0x0537be77 full disk encryption header, 0x44415441 external data file name.
use crate::bytes::{be32, be64};
use qimg_core::{Error, Result};

/// The magic number `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Incompatible feature: the image was not closed cleanly (lazy refcounts).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature: the image is marked corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature: an external data file holds the guest data.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Compatible feature: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension: persistent bitmaps (see [`super::bitmap`]).
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Full disk encryption header extension (LUKS): `u64 offset, u64 length` of the LUKS header.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// `crypt_method` for QEMU's legacy AES-CBC.
pub const CRYPT_AES: u32 = 1;
/// `crypt_method` for LUKS.
pub const CRYPT_LUKS: u32 = 2;
/// Autoclear feature: the external data file is a valid raw image (guest offset = file offset,
/// every write reaches it).
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;
/// Autoclear feature: the bitmaps extension is valid.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Largest L1 table QEMU accepts, in bytes (QCOW_MAX_L1_SIZE).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table QEMU accepts, in bytes (QCOW_MAX_REFTABLE_SIZE).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Most internal snapshots QEMU accepts (QCOW_MAX_SNAPSHOTS).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Offsets must stay below 2^56 (the L2 entry's offset field).
pub const MAX_OFFSET: u64 = 1 << 56;
/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_NAME: u32 = 1023;

/// The decoded header (both versions; v2 images get v3 defaults for the v3 fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name (0 = none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest size.
    pub size: u64,
    /// Encryption method.
    pub crypt_method: u32,
    /// Entries in the L1 table.
    pub l1_size: u32,
    /// Host offset of the L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of refcount_bits.
    pub refcount_order: u32,
    /// Header length in bytes (72 for v2).
    pub header_length: u32,
    /// Compression type (0 zlib).
    pub compression_type: u8,
    /// Backing file name, if any.
    pub backing_file: Option<String>,
    /// Backing format from the header extension, if any.
    pub backing_format: Option<String>,
    /// Feature names from the feature table: (type, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
    /// The bitmaps extension's body, as stored (validated by [`super::bitmap`]).
    pub bitmaps_ext: Option<Vec<u8>>,
    /// External data file name from its header extension, if any.
    pub data_file: Option<String>,
    /// The full disk encryption extension: host offset and length of the LUKS header.
    pub crypto_header: Option<(u64, u64)>,
}

fn check_offset(what: &str, off: u64, cluster: u64) -> Result<()> {
    if off >= MAX_OFFSET || !off.is_multiple_of(cluster) {
        return Err(Error::corrupt(format!(
            "Invalid {what} offset {off:#x} (unaligned or beyond 2^56)"
        )));
    }
    Ok(())
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Width of a refcount entry in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Parse and bound the header in `first` (the image's first cluster, or as much of it as the
    /// file has). `file_size` bounds table offsets.
    pub fn parse(first: &[u8], file_size: u64) -> Result<Header> {
        if first.len() < 72 {
            return Err(Error::corrupt(
                "Image is not in qcow2 format (header truncated)",
            ));
        }
        if be32(first, 0) != MAGIC {
            return Err(Error::new(
                qimg_core::ErrorCode::WrongFormat,
                "Image is not in qcow2 format",
            ));
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(first, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(Error::corrupt(format!(
                "Unsupported cluster size: 2^{cluster_bits}"
            )));
        }
        let cluster = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(first, 8),
            backing_file_size: be32(first, 16),
            cluster_bits,
            size: be64(first, 24),
            crypt_method: be32(first, 32),
            l1_size: be32(first, 36),
            l1_table_offset: be64(first, 40),
            refcount_table_offset: be64(first, 48),
            refcount_table_clusters: be32(first, 56),
            nb_snapshots: be32(first, 60),
            snapshots_offset: be64(first, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: 72,
            compression_type: 0,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
            bitmaps_ext: None,
            data_file: None,
            crypto_header: None,
        };
        if version == 3 {
            if first.len() < 104 {
                return Err(Error::corrupt("qcow2 header truncated"));
            }
            h.incompatible = be64(first, 72);
            h.compatible = be64(first, 80);
            h.autoclear = be64(first, 88);
            h.refcount_order = be32(first, 96);
            h.header_length = be32(first, 100);
            if h.header_length < 104
                || h.header_length as u64 > cluster
                || h.header_length as usize > first.len()
            {
                return Err(Error::corrupt(format!(
                    "qcow2 header_length {} is invalid",
                    h.header_length
                )));
            }
            if h.header_length > 104 {
                h.compression_type = first[104];
            }
        }
        if h.refcount_order > 6 {
            return Err(Error::corrupt(format!(
                "Refcount order {} is out of range (0..6)",
                h.refcount_order
            )));
        }
        if h.size > i64::MAX as u64 || h.size.div_ceil(cluster) >= MAX_OFFSET / 8 {
            return Err(Error::corrupt(format!(
                "Image size {} is too large",
                h.size
            )));
        }
        if h.l2_entry_bytes() == 16 && h.cluster_bits < 14 {
            // 32 subclusters must each be at least 512 bytes.
            return Err(Error::corrupt(format!(
                "Unsupported subcluster size: {}",
                cluster / 32
            )));
        }
        let l2_entries = cluster / h.l2_entry_bytes();
        let needed_l1 = h.size.div_ceil(cluster * l2_entries);
        if h.l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(Error::corrupt(format!(
                "Active L1 table too large ({} entries)",
                h.l1_size
            )));
        }
        if (h.l1_size as u64) < needed_l1 {
            return Err(Error::corrupt(format!(
                "L1 table is too small for the image size ({} < {needed_l1})",
                h.l1_size
            )));
        }
        if h.l1_size > 0 {
            check_offset("L1 table", h.l1_table_offset, cluster)?;
            if h.l1_table_offset == 0 || h.l1_table_offset >= file_size.max(cluster) {
                return Err(Error::corrupt(format!(
                    "L1 table offset {:#x} is outside the image file",
                    h.l1_table_offset
                )));
            }
        }
        if h.refcount_table_clusters as u64 * cluster > MAX_REFTABLE_BYTES {
            return Err(Error::corrupt(format!(
                "Reference count table too large ({} clusters)",
                h.refcount_table_clusters
            )));
        }
        if h.refcount_table_clusters == 0 {
            return Err(Error::corrupt("Image has no reference count table"));
        }
        check_offset("reference count table", h.refcount_table_offset, cluster)?;
        if h.refcount_table_offset == 0 || h.refcount_table_offset >= file_size.max(cluster) {
            return Err(Error::corrupt(format!(
                "Reference count table offset {:#x} is outside the image file",
                h.refcount_table_offset
            )));
        }
        if h.nb_snapshots > MAX_SNAPSHOTS {
            return Err(Error::corrupt(format!(
                "Too many snapshots ({})",
                h.nb_snapshots
            )));
        }
        if h.nb_snapshots > 0 {
            check_offset("snapshot table", h.snapshots_offset, cluster)?;
        }
        if h.backing_file_offset != 0 {
            let end = h
                .backing_file_offset
                .saturating_add(h.backing_file_size as u64);
            if h.backing_file_size > MAX_BACKING_NAME || end > cluster || end as usize > first.len()
            {
                return Err(Error::corrupt(format!(
                    "Backing file name at {:#x}+{} is too long or outside the header cluster",
                    h.backing_file_offset, h.backing_file_size
                )));
            }
            let raw = &first[h.backing_file_offset as usize..end as usize];
            h.backing_file = Some(String::from_utf8_lossy(raw).into_owned());
        }
        h.parse_extensions(first)?;
        Ok(h)
    }

    fn parse_extensions(&mut self, first: &[u8]) -> Result<()> {
        let mut off = self.header_length as usize;
        let limit = match self.backing_file_offset {
            0 => first.len(),
            b => (b as usize).min(first.len()),
        };
        for _ in 0..1024 {
            if off + 8 > limit {
                return Ok(());
            }
            let ty = be32(first, off);
            let len = be32(first, off + 4) as usize;
            if ty == 0 {
                return Ok(());
            }
            let data = off + 8;
            if len > limit.saturating_sub(data) {
                return Err(Error::corrupt(format!(
                    "Header extension {ty:#x} overflows the header cluster"
                )));
            }
            let body = &first[data..data + len];
            match ty {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(
                        String::from_utf8_lossy(body)
                            .trim_end_matches('\0')
                            .to_string(),
                    )
                }
                EXT_FEATURE_TABLE => {
                    for e in body.chunks_exact(48) {
                        let name = String::from_utf8_lossy(&e[2..])
                            .trim_end_matches('\0')
                            .to_string();
                        self.feature_names.push((e[0], e[1], name));
                    }
                }
                EXT_BITMAPS => self.bitmaps_ext = Some(body.to_vec()),
                EXT_CRYPTO => {
                    // QEMU's checks and words (qcow2_read_extensions).
                    if self.crypt_method != CRYPT_LUKS {
                        return Err(Error::corrupt(
                            "CRYPTO header extension only expected with LUKS encryption method",
                        ));
                    }
                    if len != 16 {
                        return Err(Error::corrupt(format!(
                            "CRYPTO header extension size {len}, but expected size 16"
                        )));
                    }
                    let (o, l) = (be64(body, 0), be64(body, 8));
                    let cs = 1u64 << self.cluster_bits;
                    if !o.is_multiple_of(cs) {
                        return Err(Error::corrupt(format!(
                            "Encryption header offset '{o}' is not a multiple of cluster size '{cs}'"
                        )));
                    }
                    self.crypto_header = Some((o, l));
                }
                EXT_DATA_FILE => {
                    if body.is_empty() || body.len() > 1023 || body.contains(&0) {
                        return Err(Error::corrupt(
                            "External data file name must be 1 to 1023 bytes without NUL",
                        ));
                    }
                    self.data_file = Some(String::from_utf8_lossy(body).into_owned())
                }
                _ => {}
            }
            off = data + len.div_ceil(8) * 8;
        }
        Err(Error::corrupt("Too many header extensions"))
    }

    /// Bytes per L2 entry: 16 with extended L2 entries (incompatible bit 4), else 8.
    pub fn l2_entry_bytes(&self) -> u64 {
        if self.incompatible & INCOMPAT_EXTL2 != 0 {
            16
        } else {
            8
        }
    }

    /// Name of incompatible feature `bit` from the feature table, if named.
    pub fn feature_name(&self, kind: u8, bit: u8) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|(t, b, _)| *t == kind && *b == bit)
            .map(|(_, _, n)| n.as_str())
    }

    /// Encode the fixed header fields (72 or 112 bytes; the caller appends extensions).
    pub fn encode_fixed(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(112);
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.backing_file_offset.to_be_bytes());
        b.extend_from_slice(&self.backing_file_size.to_be_bytes());
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            b.extend_from_slice(&self.incompatible.to_be_bytes());
            b.extend_from_slice(&self.compatible.to_be_bytes());
            b.extend_from_slice(&self.autoclear.to_be_bytes());
            b.extend_from_slice(&self.refcount_order.to_be_bytes());
            b.extend_from_slice(&self.header_length.to_be_bytes());
            if self.header_length > 104 {
                b.push(self.compression_type);
                b.resize(self.header_length as usize, 0);
            }
        }
        b
    }
}

/// Append one header extension (type, length, data padded to 8 bytes).
pub fn push_extension(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

/// The feature name table QEMU writes: (type, bit, name).
pub const FEATURE_TABLE: &[(u8, u8, &str)] = &[
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];
