//! The sparse extent header (VMware "hosted sparse extent", version 1–3) and the stream markers
//! of streamOptimized extents, with QEMU's bounds.
//!
//! ```text
//! struct SparseExtentHeader {          // 512 bytes at offset 0 of a sparse extent, little-endian
//!     uint32 magicNumber;              //  0: 'KDMV' (0x564d444b)
//!     uint32 version;                  //  4: 1, 2 (zeroed-grain GTEs) or 3 (streamOptimized)
//!     uint32 flags;                    //  8: bit 0 valid newline test, bit 1 redundant grain
//!                                      //     table, bit 2 zeroed-grain GTEs, bit 16 compressed
//!                                      //     grains, bit 17 stream markers
//!     uint64 capacity;                 // 12: sectors
//!     uint64 grainSize;                // 20: sectors per grain
//!     uint64 descriptorOffset;         // 28: sector of the embedded descriptor (0 = none)
//!     uint64 descriptorSize;           // 36: sectors
//!     uint32 numGTEsPerGT;             // 44: 512
//!     uint64 rgdOffset;                // 48: sector of the redundant grain directory
//!     uint64 gdOffset;                 // 56: sector of the grain directory (~0: in the footer)
//!     uint64 overHead;                 // 64: sectors before the first grain
//!     uint8  uncleanShutdown;          // 72
//!     char   singleEndLineChar;        // 73: '\n'
//!     char   nonEndLineChar;           // 74: ' '
//!     char   doubleEndLineChar1;       // 75: '\r'
//!     char   doubleEndLineChar2;       // 76: '\n'
//!     uint16 compressAlgorithm;        // 77: 0 none, 1 deflate (zlib stream)
//!     uint8  pad[433];
//! };
//!
//! struct Marker {                      // one sector in a stream (a grain marker is followed by
//!     uint64 val;                      //   its data in the same run of sectors)
//!     uint32 size;                     // grain: compressed bytes; else 0
//!     uint32 type;                     // metadata markers only: 0 end of stream, 1 grain
//! };                                   //   table, 2 grain directory, 3 footer
//! ```
use crate::bytes::{le32, le64};
use qimg_core::{Error, ErrorCode, Result};

/// 'KDMV' read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// Header (and sector) size.
pub const SECTOR: u64 = 512;
/// Flag: the newline-detection characters are valid.
pub const FLAG_NL_DETECT: u32 = 1;
/// Flag: a redundant grain directory and tables exist.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag: a grain table entry of 1 means a zeroed grain.
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag: grains are compressed.
pub const FLAG_COMPRESS: u32 = 1 << 16;
/// Flag: the extent carries stream markers.
pub const FLAG_MARKER: u32 = 1 << 17;
/// `gdOffset` value meaning "read the footer at the end of the file".
pub const GD_AT_END: u64 = u64::MAX;
/// Marker types.
pub const MARKER_EOS: u32 = 0;
/// Grain table marker.
pub const MARKER_GT: u32 = 1;
/// Grain directory marker.
pub const MARKER_GD: u32 = 2;
/// Footer marker.
pub const MARKER_FOOTER: u32 = 3;
/// Entries per grain table QEMU accepts at most (and writes).
pub const GTES_PER_GT: u32 = 512;
/// Largest grain QEMU accepts (sectors): 2 MiB... QEMU's `0x200000` sectors bound, kept as is.
pub const MAX_GRAIN_SECTORS: u64 = 0x20_0000;
/// Largest grain directory QEMU accepts (entries): "L1 size too big". The directory must also
/// lie inside the file, so reading it never allocates more than the file holds.
pub const MAX_GD_ENTRIES: u64 = 32 * 1024 * 1024;
/// Largest capacity accepted (sectors): QEMU's `VMDK_EXTENT_MAX_SECTORS`-like bound of 2^53 bytes.
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 44;

/// A parsed sparse extent header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1–3).
    pub version: u32,
    /// Flags (see the `FLAG_*` constants).
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Sector of the embedded descriptor (0 = none).
    pub desc_offset: u64,
    /// Sectors of the embedded descriptor.
    pub desc_size: u64,
    /// Grain table entries per table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory ([`GD_AT_END`] in a stream header).
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Unclean-shutdown byte.
    pub unclean: u8,
    /// Compression algorithm (1 = deflate).
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parse 512 bytes, checking magic and QEMU's bounds (typed errors, nothing allocated).
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() >= 4 && b[..4] == *b"COWD" {
            return Err(Error::unsupported(
                "VMware 3 (COWD) sparse extents are not supported",
            ));
        }
        if b.len() < SECTOR as usize || le32(b, 0) != MAGIC {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in VMDK format (no KDMV magic)",
            ));
        }
        let h = SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            unclean: b[72],
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        h.validate()?;
        Ok(h)
    }

    /// QEMU's checks in `vmdk_open_vmdk4` / `vmdk_add_extent`, plus bounds on every field used
    /// to size an allocation.
    pub fn validate(&self) -> Result<()> {
        if self.version > 3 || self.version == 0 {
            return Err(Error::unsupported(format!(
                "Unsupported VMDK version {}",
                self.version
            )));
        }
        if self.gtes_per_gt == 0 || self.gtes_per_gt > GTES_PER_GT {
            return Err(Error::corrupt("L2 table size too big"));
        }
        if self.grain_size == 0 || self.grain_size > MAX_GRAIN_SECTORS {
            return Err(Error::corrupt(format!(
                "Invalid granularity, image may be corrupt (grain size {} sectors)",
                self.grain_size
            )));
        }
        if self.gd_entries() > MAX_GD_ENTRIES {
            return Err(Error::corrupt("L1 size too big"));
        }
        if self.capacity > MAX_CAPACITY_SECTORS {
            return Err(Error::corrupt(format!(
                "Capacity {} sectors is too large",
                self.capacity
            )));
        }
        if self.desc_size > 2048 {
            return Err(Error::corrupt("Embedded descriptor is too large"));
        }
        if self.flags & FLAG_COMPRESS != 0 && self.compress_algorithm != 1 {
            return Err(Error::unsupported(format!(
                "Unsupported VMDK compression algorithm {}",
                self.compress_algorithm
            )));
        }
        Ok(())
    }

    /// Guest bytes one grain table covers.
    pub fn gt_coverage(&self) -> u64 {
        self.gtes_per_gt as u64 * self.grain_size * SECTOR
    }

    /// Grain directory entries (QEMU: capacity rounded up to whole grain tables).
    pub fn gd_entries(&self) -> u64 {
        self.capacity
            .div_ceil(self.gtes_per_gt as u64 * self.grain_size)
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// True for compressed grains.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESS != 0
    }

    /// True when grains carry markers.
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKER != 0
    }

    /// True when a GTE of 1 is a zeroed grain.
    pub fn zero_grain(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }

    /// Encode as 512 bytes.
    pub fn encode(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.desc_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.desc_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = self.unclean;
        b[73] = b'\n';
        b[74] = b' ';
        b[75] = b'\r';
        b[76] = b'\n';
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

/// A stream marker (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// LBA (grain) or sectors of metadata following (others).
    pub val: u64,
    /// Compressed bytes (grain) or 0.
    pub size: u32,
    /// Type (metadata markers only).
    pub kind: u32,
}

impl Marker {
    /// Parse the first 16 bytes of `b`.
    pub fn parse(b: &[u8]) -> Self {
        Marker {
            val: le64(b, 0),
            size: le32(b, 8),
            kind: le32(b, 12),
        }
    }

    /// A metadata marker sector (`size` 0).
    pub fn metadata(kind: u32, sectors: u64) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..8].copy_from_slice(&sectors.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b
    }
}

/// The error for an offset in a table pointing outside the file.
pub fn beyond(what: &str, sector: u64) -> Error {
    Error::corrupt(format!(
        "{what} at sector {sector} is beyond the end of the image"
    ))
}
