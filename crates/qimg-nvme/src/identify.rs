//! Identify data structures (NVMe Base 2.0 §5.17.2), decoded into the fields qimg uses.
//!
//! Identify Controller (CNS 01h, 4096 bytes):
//! ```text
//! 0    VID u16 · 2 SSVID u16 · 4 SN char[20] · 24 MN char[40] · 64 FR char[8]
//! 72   RAB u8 · 73 IEEE u8[3] · 76 CMIC u8 · 77 MDTS u8 (2^n × CAP.MPSMIN, 0 = no limit)
//! 78   CNTLID u16 · 80 VER u32
//! 512  SQES u8 · 513 CQES u8 · 516 NN u32 · 520 ONCS u16 (bit 2 DSM, bit 3 Write Zeroes)
//! 525  VWC u8 (bit 0 volatile write cache present)
//! ```
//! Identify Namespace (CNS 00h, 4096 bytes):
//! ```text
//! 0    NSZE u64 · 8 NCAP u64 · 16 NUSE u64 · 24 NSFEAT u8 · 25 NLBAF u8 (0-based)
//! 26   FLBAS u8 (format index 3:0, 6:5 high bits) · 128 LBAF[64] u32 each:
//!      MS 15:0 (metadata bytes) · LBADS 23:16 (log2 LBA size) · RP 25:24
//! ```
use crate::err::{Error, Result};

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

/// Identify Controller, the fields qimg uses.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    /// PCI vendor ID.
    pub vid: u16,
    /// PCI subsystem vendor ID.
    pub ssvid: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Maximum data transfer size as 2^n minimum pages (0 = unlimited).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version (VER, or VS when 0).
    pub version: u32,
    /// Number of namespaces (highest NSID).
    pub nn: u32,
    /// Optional NVM command support.
    pub oncs: u16,
    /// Volatile write cache present.
    pub vwc: bool,
}

impl ControllerInfo {
    /// Decode a 4096-byte Identify Controller structure.
    pub fn parse(b: &[u8]) -> Self {
        ControllerInfo {
            vid: le16(b, 0),
            ssvid: le16(b, 2),
            serial: text(&b[4..24]),
            model: text(&b[24..64]),
            firmware: text(&b[64..72]),
            mdts: b[77],
            cntlid: le16(b, 78),
            version: le32(b, 80),
            nn: le32(b, 516),
            oncs: le16(b, 520),
            vwc: b[525] & 1 == 1,
        }
    }
    /// Dataset Management supported.
    pub fn supports_dsm(&self) -> bool {
        self.oncs & (1 << 2) != 0
    }
    /// Write Zeroes supported.
    pub fn supports_write_zeroes(&self) -> bool {
        self.oncs & (1 << 3) != 0
    }
}

/// Identify Namespace, the fields qimg uses.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Size in logical blocks.
    pub nsze: u64,
    /// Capacity in logical blocks.
    pub ncap: u64,
    /// Blocks in use.
    pub nuse: u64,
    /// Logical block size in bytes.
    pub lba_size: u32,
    /// Metadata bytes per block (in the formatted LBA format).
    pub metadata_size: u16,
}

impl NamespaceInfo {
    /// Decode a 4096-byte Identify Namespace structure; bounds every field.
    pub fn parse(nsid: u32, b: &[u8]) -> Result<Self> {
        let nsze = le64(b, 0);
        if nsze == 0 {
            return Err(Error::new(
                qimg_core::ErrorCode::NotFound,
                format!("NVMe namespace {nsid} is not active"),
            ));
        }
        let flbas = b[26];
        let idx = ((flbas & 0xf) | ((flbas >> 5) & 3) << 4) as usize;
        if idx > b[25] as usize || idx >= 64 {
            return Err(Error::corrupt(format!(
                "NVMe namespace {nsid}: formatted LBA format {idx} out of range"
            )));
        }
        let lbaf = le32(b, 128 + 4 * idx);
        let lbads = (lbaf >> 16) & 0xff;
        if !(9..=16).contains(&lbads) {
            return Err(Error::unsupported(format!(
                "NVMe namespace {nsid}: LBA size 2^{lbads} is not supported"
            )));
        }
        let ms = (lbaf & 0xffff) as u16;
        if ms != 0 && flbas & 0x10 != 0 {
            return Err(Error::unsupported(format!(
                "NVMe namespace {nsid}: extended-LBA metadata is not supported"
            )));
        }
        if nsze.checked_mul(1 << lbads).is_none() {
            return Err(Error::corrupt(format!(
                "NVMe namespace {nsid}: size overflows"
            )));
        }
        Ok(NamespaceInfo {
            nsid,
            nsze,
            ncap: le64(b, 8),
            nuse: le64(b, 16),
            lba_size: 1 << lbads,
            metadata_size: ms,
        })
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.nsze * self.lba_size as u64
    }
}
