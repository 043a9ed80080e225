//! NVMe controller registers (NVMe Base Specification 2.0, §3.1) as offsets in BAR0.
//!
//! ```text
//! 0x00 CAP   64  MQES 15:0 (max queue entries, 0-based) · CQR 16 · TO 31:24 (×500 ms)
//!                DSTRD 35:32 (doorbell stride 4 << n) · CSS 44:37 · MPSMIN 51:48 · MPSMAX 55:52
//! 0x08 VS    32  MJR 31:16 · MNR 15:8 · TER 7:0
//! 0x0C INTMS 32 / 0x10 INTMC 32  interrupt mask set/clear (pin/MSI only)
//! 0x14 CC    32  EN 0 · CSS 6:4 · MPS 10:7 · AMS 13:11 · SHN 15:14 · IOSQES 19:16 · IOCQES 23:20
//! 0x1C CSTS  32  RDY 0 · CFS 1 · SHST 3:2 (00 normal, 01 occurring, 10 complete)
//! 0x24 AQA   32  ASQS 11:0 · ACQS 27:16 (0-based sizes)
//! 0x28 ASQ   64  admin SQ base (page aligned)
//! 0x30 ACQ   64  admin CQ base (page aligned)
//! 0x1000 + (2y)·(4 << DSTRD)     SQ y tail doorbell
//! 0x1000 + (2y+1)·(4 << DSTRD)   CQ y head doorbell
//! ```

/// Capabilities.
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Controller configuration.
pub const CC: usize = 0x14;
/// Controller status.
pub const CSTS: usize = 0x1c;
/// Admin queue attributes.
pub const AQA: usize = 0x24;
/// Admin submission queue base.
pub const ASQ: usize = 0x28;
/// Admin completion queue base.
pub const ACQ: usize = 0x30;

/// CC.EN.
pub const CC_EN: u32 = 1;
/// CC with IOSQES = 6 (64-byte SQEs), IOCQES = 4 (16-byte CQEs), NVM command set, 4 KiB pages,
/// round-robin arbitration, no shutdown — and EN clear.
pub const CC_BASE: u32 = (6 << 16) | (4 << 20);
/// CC.SHN = 01 (normal shutdown).
pub const CC_SHN_NORMAL: u32 = 1 << 14;
/// CC.SHN mask.
pub const CC_SHN_MASK: u32 = 3 << 14;
/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1;
/// CSTS.CFS (controller fatal status).
pub const CSTS_CFS: u32 = 2;
/// CSTS.SHST mask and the "shutdown complete" value.
pub const CSTS_SHST_MASK: u32 = 3 << 2;
/// CSTS.SHST = 10b.
pub const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// The fields of CAP qimg uses.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    /// Maximum queue entries (1-based).
    pub mqes: u32,
    /// Worst-case time to become ready / not ready, in milliseconds.
    pub timeout_ms: u64,
    /// Doorbell stride in bytes.
    pub dstrd: usize,
    /// Minimum memory page size in bytes.
    pub mps_min: usize,
    /// NVM command set supported.
    pub css_nvm: bool,
}

impl Cap {
    /// Decode the 64-bit register.
    pub fn parse(v: u64) -> Self {
        Cap {
            mqes: (v & 0xffff) as u32 + 1,
            timeout_ms: ((v >> 24) & 0xff).max(1) * 500,
            dstrd: 4 << ((v >> 32) & 0xf),
            mps_min: 1 << (12 + ((v >> 48) & 0xf)),
            css_nvm: (v >> 37) & 1 == 1,
        }
    }

    /// Offset of SQ `qid`'s tail doorbell.
    pub fn sq_doorbell(&self, qid: u16) -> usize {
        0x1000 + 2 * qid as usize * self.dstrd
    }

    /// Offset of CQ `qid`'s head doorbell.
    pub fn cq_doorbell(&self, qid: u16) -> usize {
        0x1000 + (2 * qid as usize + 1) * self.dstrd
    }
}
