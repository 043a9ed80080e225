//! The protocol layer: a byte-addressed store under a format driver.
//!
//! A `Storage` is what QEMU calls a protocol node (`file`, later `nbd`, `nvme`, …). Format drivers
//! only ever talk to one through this trait, so every format works over every protocol.
use crate::error::Result;

/// Whether a host range holds data or is a hole, as `SEEK_DATA`/`SEEK_HOLE` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRun {
    /// True if the run holds data (or may: unknown counts as data).
    pub data: bool,
    /// Length of the run in bytes (at least 1 when the requested range was non-empty).
    pub length: u64,
}

/// A byte store. Implementations are safe to call from several threads at once.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A name for messages (the filename or URI).
    fn name(&self) -> &str;
    /// Read `buf.len()` bytes at `offset`; bytes past the end of the store read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Write all of `buf` at `offset`, growing the store if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Current size in bytes.
    fn size(&self) -> Result<u64>;
    /// Set the size (grow or shrink).
    fn truncate(&self, size: u64) -> Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> Result<()>;
    /// Make a range read as zeros, deallocating it where the store can.
    fn discard(&self, offset: u64, length: u64) -> Result<()>;
    /// Deallocate a range as a hint (a raw node's guest discard, QEMU's `pdiscard`): afterwards
    /// the range may read as anything stable. Defaults to [`Storage::discard`]; NBD sends
    /// `NBD_CMD_TRIM`.
    fn trim(&self, offset: u64, length: u64) -> Result<()> {
        self.discard(offset, length)
    }
    /// Make a range read as zeros; keeps it allocated unless `may_unmap`.
    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()>;
    /// Reserve space for a range (posix_fallocate), growing the store if needed.
    fn allocate(&self, offset: u64, length: u64) -> Result<()>;
    /// Bytes the store occupies on the host (`st_blocks * 512` for files).
    fn allocated_bytes(&self) -> Result<u64>;
    /// Whether the run starting at `offset` (at most `length` long) is data or a hole.
    fn data_run(&self, offset: u64, length: u64) -> Result<DataRun>;
    /// True if writes are refused.
    fn read_only(&self) -> bool;
    /// Start writing dirty data back without waiting (a hint; bulk writers call it per chunk so
    /// the final flush has little left to do).
    fn start_writeback(&self) {}
    /// Call after [`Storage::flush`] where the output must be durable whatever the cache mode:
    /// completes the flush a mode that drops flushes (`cache=unsafe`) skipped. Closing an image
    /// calls it. Default: nothing to do.
    fn flush_durable(&self) -> Result<()> {
        Ok(())
    }
    /// Make the whole store read as zeros, but only if that is fast (NBD `WRITE_ZEROES` with
    /// `FAST_ZERO`, as qemu-img convert pre-zeroes a target): `Ok(false)` when it cannot, and
    /// nothing is promised then. Default: `Ok(false)`.
    fn make_zero_fast(&self) -> Result<bool> {
        Ok(false)
    }
    /// Write `buf` at `offset` and make it durable before returning ("force unit access").
    /// Default: the write, then a flush; NBD sends the write with `NBD_CMD_FLAG_FUA` when the
    /// server offers it.
    fn write_at_fua(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_at(buf, offset)?;
        self.flush()
    }
}
