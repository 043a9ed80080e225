//! Options shared by every format's open and create paths, already validated by TypeScript and
//! normalized once here.

/// `preallocation=` as qemu-img takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// No preallocation (sparse).
    #[default]
    Off,
    /// Allocate metadata only (qcow2).
    Metadata,
    /// posix_fallocate the data area.
    Falloc,
    /// Write zeros over the data area.
    Full,
}

impl Preallocation {
    /// Parse qemu-img's spelling.
    pub fn parse(s: &str) -> qimg_core::Result<Self> {
        match s {
            "off" => Ok(Self::Off),
            "metadata" => Ok(Self::Metadata),
            "falloc" => Ok(Self::Falloc),
            "full" => Ok(Self::Full),
            _ => Err(qimg_core::Error::invalid(format!(
                "Invalid parameter '{s}'"
            ))),
        }
    }
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Refuse writes; never modify the file (no dirty bits, no repairs).
    pub read_only: bool,
}

/// Every create option qimg knows; each format reads the ones it supports and rejects the rest
/// (TypeScript already rejected options a format does not list).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Virtual size in bytes.
    pub size: u64,
    /// `preallocation=`.
    pub preallocation: Preallocation,
    /// raw: set FS_NOCOW_FL (`nocow=on`).
    pub nocow: bool,
    /// qcow2: `compat=0.10|1.1` (None = 1.1).
    pub compat: Option<String>,
    /// qcow2: `cluster_size=` in bytes (None = 65536).
    pub cluster_size: Option<u64>,
    /// qcow2: `refcount_bits=` (None = 16).
    pub refcount_bits: Option<u32>,
    /// qcow2: `lazy_refcounts=on`.
    pub lazy_refcounts: bool,
    /// `backing_file=`.
    pub backing_file: Option<String>,
    /// `backing_fmt=`.
    pub backing_fmt: Option<String>,
    /// qcow2: `extended_l2=on` (refused until the qcow2-parity work).
    pub extended_l2: bool,
    /// qcow2: `compression_type=` (zlib only until the qcow2-parity work).
    pub compression_type: Option<String>,
    /// qcow2: `data_file=`: guest data goes to this external file (created by the caller).
    pub data_file: Option<String>,
    /// qcow2: `data_file_raw=on`: the data file stays a valid raw image (identity mapping).
    pub data_file_raw: bool,
    /// vdi: `static=on` (every block allocated at creation).
    pub static_image: bool,
    /// vpc: `subformat=dynamic|fixed` (None = dynamic).
    pub subformat: Option<String>,
    /// vpc: `force_size=on` (keep the size as given instead of rounding to CHS geometry).
    pub force_size: bool,
    /// qed: `table_size=` in clusters (None = 4).
    pub table_size: Option<u64>,
    /// vmdk: `compat6=on` (virtual hardware version 6).
    pub compat6: bool,
    /// vmdk: `hwversion=` (exclusive with `compat6`).
    pub hwversion: Option<String>,
    /// vmdk: `adapter_type=` (None = ide).
    pub adapter_type: Option<String>,
    /// vmdk: `toolsversion=` (None = 2147483647).
    pub toolsversion: Option<String>,
    /// vmdk: `zeroed_grain=on`.
    pub zeroed_grain: bool,
    /// vhdx: `block_size=` in bytes (None or 0 = automatic, as QEMU).
    pub block_size: Option<u64>,
    /// vhdx: `log_size=` in bytes (None = 1 MiB).
    pub log_size: Option<u64>,
    /// vhdx: `block_state_zero=` (None = on).
    pub block_state_zero: Option<bool>,
}
