//! The qcow (version 1) header and its bounds, as QEMU's `block/qcow.c` checks them on open.
//!
//! On-disk layout (big-endian), QEMU's `QCowHeader`:
//!
//! ```text
//! typedef struct QCowHeader {
//!     uint32_t magic;               /* 'Q' 'F' 'I' 0xfb */
//!     uint32_t version;             /* 1 */
//!     uint64_t backing_file_offset;
//!     uint32_t backing_file_size;
//!     uint32_t mtime;
//!     uint64_t size;                /* in bytes */
//!     uint8_t cluster_bits;
//!     uint8_t l2_bits;              /* log2 of the entries per L2 table */
//!     uint16_t padding;
//!     uint32_t crypt_method;        /* 0 none, 1 AES */
//!     uint64_t l1_table_offset;
//! } QEMU_PACKED QCowHeader;        /* 48 bytes */
//! ```
use qimg_core::{Error, ErrorCode, Result};

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// The only version this format has.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 48;
/// Longest backing file name QEMU reads.
pub const MAX_BACKING_NAME: u32 = 1023;
/// `crypt_method` for AES.
pub const CRYPT_AES: u32 = 1;

/// A parsed qcow header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QcowHeader {
    /// Offset of the backing file name (0 = none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// Modification time (unused by QEMU).
    pub mtime: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// log2 of the cluster size (9..16).
    pub cluster_bits: u8,
    /// log2 of the entries per L2 table (6..13).
    pub l2_bits: u8,
    /// 0 = none, 1 = AES.
    pub crypt_method: u32,
    /// Offset of the L1 table.
    pub l1_table_offset: u64,
}

impl QcowHeader {
    /// Decode and bound-check the header; `file_len` bounds the L1 table.
    pub fn parse(b: &[u8], file_len: u64) -> Result<Self> {
        if b.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
            return Err(Error::corrupt(
                "Image not in qcow format (header truncated)",
            ));
        }
        let u32at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let u64at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
        if u32at(0) != MAGIC {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in qcow format",
            ));
        }
        let version = u32at(4);
        if version != VERSION {
            return Err(Error::unsupported(format!(
                "qcow (v{VERSION}) does not support qcow version {version}"
            )));
        }
        let h = QcowHeader {
            backing_file_offset: u64at(8),
            backing_file_size: u32at(16),
            mtime: u32at(20),
            size: u64at(24),
            cluster_bits: b[32],
            l2_bits: b[33],
            crypt_method: u32at(36),
            l1_table_offset: u64at(40),
        };
        if h.size <= 1 {
            return Err(Error::corrupt(
                "Image size is too small (must be at least 2 bytes)",
            ));
        }
        if !(9..=16).contains(&h.cluster_bits) {
            return Err(Error::corrupt("Cluster size must be between 512 and 64k"));
        }
        if !(6..=13).contains(&h.l2_bits) {
            return Err(Error::corrupt("L2 table size must be between 512 and 64k"));
        }
        if h.crypt_method > CRYPT_AES {
            return Err(Error::corrupt("invalid encryption method in qcow header"));
        }
        let shift = h.cluster_bits as u32 + h.l2_bits as u32;
        if h.size > u64::MAX - (1u64 << shift) {
            return Err(Error::corrupt("Image too large"));
        }
        let l1 = h.l1_entries();
        if l1 > i32::MAX as u64 / 8 {
            return Err(Error::corrupt("Image too large"));
        }
        if h.l1_table_offset
            .checked_add(l1 * 8)
            .is_none_or(|e| e > file_len)
            || h.l1_table_offset < HEADER_LEN as u64
        {
            return Err(Error::corrupt(format!(
                "qcow L1 table at {:#x} ({} entries) lies outside the file",
                h.l1_table_offset, l1
            )));
        }
        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME {
                return Err(Error::corrupt("Backing file name too long"));
            }
            if h.backing_file_offset
                .checked_add(h.backing_file_size as u64)
                .is_none_or(|e| e > file_len)
            {
                return Err(Error::corrupt(
                    "qcow backing file name lies outside the file",
                ));
            }
        }
        Ok(h)
    }

    /// Encode into [`HEADER_LEN`] bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&VERSION.to_be_bytes());
        b[8..16].copy_from_slice(&self.backing_file_offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.backing_file_size.to_be_bytes());
        b[20..24].copy_from_slice(&self.mtime.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        b[32] = self.cluster_bits;
        b[33] = self.l2_bits;
        b[36..40].copy_from_slice(&self.crypt_method.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b
    }

    /// Entries in the L1 table.
    pub fn l1_entries(&self) -> u64 {
        let shift = self.cluster_bits as u32 + self.l2_bits as u32;
        (self.size + (1u64 << shift) - 1) >> shift
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }
}
