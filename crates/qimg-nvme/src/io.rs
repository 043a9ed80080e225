//! NVM I/O commands on a namespace: read and write (split at the per-command transfer size, PRP
//! lists for transfers beyond two pages, up to a queue's worth of commands in flight), flush,
//! write zeroes and dataset management (deallocate).
//!
//! Read/Write (opcodes 02h/01h): CDW10-11 SLBA · CDW12 NLB 15:0 (0-based) · FUA 30.
//! Write Zeroes (08h): CDW10-11 SLBA · CDW12 NLB 15:0 · DEAC 25 (deallocate).
//! Dataset Management (09h): CDW10 NR 7:0 (ranges, 0-based) · CDW11 AD 2 (deallocate); data is
//! a list of 16-byte ranges `{ u32 context attributes; u32 length in LBAs; u64 starting LBA }`.
use crate::controller::{Controller, IoQueue, Slot};
use crate::dma::PAGE;
use crate::err::{Error, ErrorCode, Result};
use crate::identify::NamespaceInfo;
use crate::pci::Bar0;
use crate::queue::Sqe;
use std::sync::Arc;

pub(crate) const OP_FLUSH: u8 = 0x00;
pub(crate) const OP_WRITE: u8 = 0x01;
pub(crate) const OP_READ: u8 = 0x02;
const OP_WRITE_ZEROES: u8 = 0x08;
const OP_DSM: u8 = 0x09;

/// PRP1/PRP2 for `len` bytes at the start of `slot.buf` (writing a PRP list when needed).
pub(crate) fn prps(slot: &mut Slot, len: usize) -> (u64, u64) {
    let base = slot.buf.iova(0);
    let pages = len.div_ceil(PAGE);
    match pages {
        0 | 1 => (base, 0),
        2 => (base, base + PAGE as u64),
        _ => {
            let list = slot.prp.bytes_mut(0, 8 * (pages - 1));
            for (k, e) in list.chunks_exact_mut(8).enumerate() {
                e.copy_from_slice(&(base + ((k + 1) * PAGE) as u64).to_le_bytes());
            }
            (base, slot.prp.iova(0))
        }
    }
}

/// PRP1/PRP2 for `len` bytes at device address `iova` (dword aligned, any page offset) in a
/// caller's DMA buffer; pages after the first are page aligned, listed in `slot.prp` when more
/// than two.
pub(crate) fn prps_direct(slot: &mut Slot, iova: u64, len: usize) -> (u64, u64) {
    let page = PAGE as u64;
    let base = iova - iova % page;
    let pages = ((iova % page) as usize + len).div_ceil(PAGE);
    match pages {
        0 | 1 => (iova, 0),
        2 => (iova, base + page),
        _ => {
            let list = slot.prp.bytes_mut(0, 8 * (pages - 1));
            for (k, e) in list.chunks_exact_mut(8).enumerate() {
                e.copy_from_slice(&(base + (k as u64 + 1) * page).to_le_bytes());
            }
            (iova, slot.prp.iova(0))
        }
    }
}

impl IoQueue {
    /// Run `count` commands, keeping up to one per slot in flight. `prep(i, slot)` builds
    /// command `i` in a free slot; `done(i, slot)` runs after it completes successfully. The
    /// first failure is returned once every submitted command has completed.
    pub fn run(
        &mut self,
        bar: &Bar0,
        count: usize,
        what: &str,
        prep: impl FnMut(usize, &mut Slot) -> Sqe,
        done: impl FnMut(usize, &Slot),
    ) -> Result<()> {
        let limit = self.slots.len();
        self.run_limited(bar, count, limit, what, prep, done)
    }

    /// [`IoQueue::run`] with at most `limit` commands in flight: only slots `0..limit` are used.
    pub fn run_limited(
        &mut self,
        bar: &Bar0,
        count: usize,
        limit: usize,
        what: &str,
        mut prep: impl FnMut(usize, &mut Slot) -> Sqe,
        mut done: impl FnMut(usize, &Slot),
    ) -> Result<()> {
        let limit = limit.clamp(1, self.slots.len());
        let mut inflight: Vec<Option<usize>> = vec![None; self.slots.len()];
        let mut free: Vec<usize> = (0..self.slots.len()).rev().collect();
        let mut next = 0;
        let mut active = 0;
        let mut first_err: Option<Error> = None;
        loop {
            while next < count && first_err.is_none() && active < limit && self.qp.has_room() {
                let Some(s) = free.pop() else { break };
                let sqe = prep(next, &mut self.slots[s]);
                self.qp.submit(bar, sqe, s as u16);
                inflight[s] = Some(next);
                next += 1;
                active += 1;
            }
            if active == 0 {
                break;
            }
            let c = match self.qp.wait(bar) {
                Ok(c) => c,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            let s = c.cid as usize;
            let Some(i) = inflight.get(s).copied().flatten() else {
                self.broken = true;
                return Err(Error::new(
                    ErrorCode::Io,
                    format!("NVMe completion for unknown command id {s}"),
                ));
            };
            inflight[s] = None;
            free.push(s);
            active -= 1;
            match c.check(what) {
                Ok(_) => done(i, &self.slots[s]),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// How a batch splits into commands.
struct BatchPlan {
    chunks: Vec<(usize, usize, usize)>,
    direct: Vec<Option<u64>>,
}

/// A namespace of an opened controller: byte-addressed, LBA-aligned I/O.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The controller.
    pub ctrl: Arc<Controller>,
    /// Identify Namespace.
    pub info: NamespaceInfo,
}

impl Namespace {
    /// Open namespace `nsid` of `ctrl`.
    pub fn open(ctrl: &Arc<Controller>, nsid: u32) -> Result<Self> {
        Ok(Namespace {
            ctrl: ctrl.clone(),
            info: ctrl.identify_namespace(nsid)?,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size_bytes()
    }

    /// Logical block size.
    pub fn block_size(&self) -> usize {
        self.info.lba_size as usize
    }

    pub(crate) fn check(&self, offset: u64, len: u64) -> Result<()> {
        let bs = self.info.lba_size as u64;
        if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(Error::invalid(format!(
                "NVMe I/O at {offset}+{len} is not aligned to the {bs}-byte block size"
            )));
        }
        if offset.checked_add(len).is_none_or(|e| e > self.size()) {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "NVMe I/O at {offset}+{len} is beyond the namespace end {}",
                    self.size()
                ),
            )
            .with_offset(offset));
        }
        Ok(())
    }

    /// Bytes per command: up to MDTS (at most 2 MiB) straight from a caller's DMA buffer, the
    /// bounce buffers' size otherwise.
    fn chunk_for(&self, direct: bool) -> usize {
        if direct {
            self.ctrl.direct_chunk
        } else {
            self.ctrl.chunk_bytes
        }
    }

    pub(crate) fn count_ops(&self, direct: bool, n: usize) {
        let c = if direct {
            &self.ctrl.direct_ops
        } else {
            &self.ctrl.bounce_ops
        };
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn rw_sqe(&self, op: u8, lba: u64, bytes: usize, p: (u64, u64)) -> Sqe {
        let nlb = (bytes / self.info.lba_size as usize) as u32 - 1;
        Sqe::new(op, self.info.nsid)
            .prps(p.0, p.1)
            .cdw(10, lba as u32)
            .cdw(11, (lba >> 32) as u32)
            .cdw(12, nlb)
    }

    /// Read `buf.len()` bytes at `offset` (both block aligned).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.info.lba_size as u64;
        let total = buf.len();
        let direct = self.ctrl.dma_iova(buf.as_ptr(), total);
        let chunk = self.chunk_for(direct.is_some());
        let count = buf.len().div_ceil(chunk);
        self.count_ops(direct.is_some(), count);
        let mut q = self.ctrl.queue()?;
        if let Some(iova) = direct {
            return q
                .run(
                    &self.ctrl.bar,
                    count,
                    "Read",
                    |i, slot| {
                        let n = chunk.min(total - i * chunk);
                        let p = prps_direct(slot, iova + (i * chunk) as u64, n);
                        self.rw_sqe(OP_READ, (offset + (i * chunk) as u64) / bs, n, p)
                    },
                    |_, _| {},
                )
                .map_err(|e| e.with_offset(offset));
        }
        q.run(
            &self.ctrl.bar,
            count,
            "Read",
            |i, slot| {
                let n = chunk.min(total - i * chunk);
                let p = prps(slot, n);
                self.rw_sqe(OP_READ, (offset + (i * chunk) as u64) / bs, n, p)
            },
            |i, slot| {
                let n = chunk.min(total - i * chunk);
                buf[i * chunk..i * chunk + n].copy_from_slice(slot.buf.bytes(0, n));
            },
        )
        .map_err(|e| e.with_offset(offset))
    }

    /// Write `buf` at `offset` (both block aligned).
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.info.lba_size as u64;
        let direct = self.ctrl.dma_iova(buf.as_ptr(), buf.len());
        let chunk = self.chunk_for(direct.is_some());
        let count = buf.len().div_ceil(chunk);
        self.count_ops(direct.is_some(), count);
        let mut q = self.ctrl.queue()?;
        if let Some(iova) = direct {
            return q
                .run(
                    &self.ctrl.bar,
                    count,
                    "Write",
                    |i, slot| {
                        let n = chunk.min(buf.len() - i * chunk);
                        let p = prps_direct(slot, iova + (i * chunk) as u64, n);
                        self.rw_sqe(OP_WRITE, (offset + (i * chunk) as u64) / bs, n, p)
                    },
                    |_, _| {},
                )
                .map_err(|e| e.with_offset(offset));
        }
        q.run(
            &self.ctrl.bar,
            count,
            "Write",
            |i, slot| {
                let n = chunk.min(buf.len() - i * chunk);
                slot.buf
                    .bytes_mut(0, n)
                    .copy_from_slice(&buf[i * chunk..i * chunk + n]);
                let p = prps(slot, n);
                self.rw_sqe(OP_WRITE, (offset + (i * chunk) as u64) / bs, n, p)
            },
            |_, _| {},
        )
        .map_err(|e| e.with_offset(offset))
    }

    /// Chunks of a batch: (request, byte offset in the request, length), and each request's
    /// device address when its buffer is a caller's DMA buffer.
    fn plan(&self, reqs: &[(u64, *const u8, usize)]) -> Result<BatchPlan> {
        let mut chunks = Vec::new();
        let mut direct = Vec::with_capacity(reqs.len());
        for (r, &(off, ptr, len)) in reqs.iter().enumerate() {
            self.check(off, len as u64)?;
            let d = self.ctrl.dma_iova(ptr, len);
            let chunk = self.chunk_for(d.is_some());
            let n = len.div_ceil(chunk);
            self.count_ops(d.is_some(), n);
            direct.push(d);
            for c in 0..n {
                chunks.push((r, c * chunk, chunk.min(len - c * chunk)));
            }
        }
        Ok(BatchPlan { chunks, direct })
    }

    /// Read several block-aligned ranges with all their commands in flight together on one queue
    /// (up to a queue's slots at a time): one call for a whole queue depth.
    pub fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<()> {
        let desc: Vec<_> = reqs
            .iter()
            .map(|(o, b)| (*o, b.as_ptr(), b.len()))
            .collect();
        let plan = self.plan(&desc)?;
        let bs = self.info.lba_size as u64;
        let mut q = self.ctrl.queue()?;
        q.run(
            &self.ctrl.bar,
            plan.chunks.len(),
            "Read",
            |i, slot| {
                let (r, at, n) = plan.chunks[i];
                let p = match plan.direct[r] {
                    Some(iova) => prps_direct(slot, iova + at as u64, n),
                    None => prps(slot, n),
                };
                self.rw_sqe(OP_READ, (desc[r].0 + at as u64) / bs, n, p)
            },
            |i, slot| {
                let (r, at, n) = plan.chunks[i];
                if plan.direct[r].is_none() {
                    reqs[r].1[at..at + n].copy_from_slice(slot.buf.bytes(0, n));
                }
            },
        )
    }

    /// Write several block-aligned ranges with all their commands in flight together on one
    /// queue.
    pub fn write_batch(&self, reqs: &[(u64, &[u8])]) -> Result<()> {
        let desc: Vec<_> = reqs
            .iter()
            .map(|(o, b)| (*o, b.as_ptr(), b.len()))
            .collect();
        let plan = self.plan(&desc)?;
        let bs = self.info.lba_size as u64;
        let mut q = self.ctrl.queue()?;
        q.run(
            &self.ctrl.bar,
            plan.chunks.len(),
            "Write",
            |i, slot| {
                let (r, at, n) = plan.chunks[i];
                let p = match plan.direct[r] {
                    Some(iova) => prps_direct(slot, iova + at as u64, n),
                    None => {
                        slot.buf
                            .bytes_mut(0, n)
                            .copy_from_slice(&reqs[r].1[at..at + n]);
                        prps(slot, n)
                    }
                };
                self.rw_sqe(OP_WRITE, (desc[r].0 + at as u64) / bs, n, p)
            },
            |_, _| {},
        )
    }

    /// Flush the volatile write cache.
    pub fn flush(&self) -> Result<()> {
        let nsid = self.info.nsid;
        let mut q = self.ctrl.queue()?;
        q.run(
            &self.ctrl.bar,
            1,
            "Flush",
            |_, _| Sqe::new(OP_FLUSH, nsid),
            |_, _| {},
        )
    }

    /// Make `len` bytes at `offset` (block aligned) read as zeros with Write Zeroes (deallocating
    /// them when `deallocate`); falls back to writing zero buffers when the controller lacks the
    /// command.
    pub fn write_zeroes(&self, offset: u64, len: u64, deallocate: bool) -> Result<()> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let bs = self.info.lba_size as u64;
        if !self.ctrl.info.supports_write_zeroes() {
            let zeros = vec![0u8; self.ctrl.chunk_bytes.min(len as usize)];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                self.write(offset + done, &zeros[..n])?;
                done += n as u64;
            }
            return Ok(());
        }
        const MAX_NLB: u64 = 65536;
        let first = offset / bs;
        let blocks = len / bs;
        let count = blocks.div_ceil(MAX_NLB) as usize;
        let nsid = self.info.nsid;
        let mut q = self.ctrl.queue()?;
        q.run(
            &self.ctrl.bar,
            count,
            "Write Zeroes",
            |i, _| {
                let lba = first + i as u64 * MAX_NLB;
                let n = MAX_NLB.min(blocks - i as u64 * MAX_NLB);
                Sqe::new(OP_WRITE_ZEROES, nsid)
                    .cdw(10, lba as u32)
                    .cdw(11, (lba >> 32) as u32)
                    .cdw(12, (n - 1) as u32 | if deallocate { 1 << 25 } else { 0 })
            },
            |_, _| {},
        )
        .map_err(|e| e.with_offset(offset))
    }

    /// Deallocate `len` bytes at `offset` (block aligned) with Dataset Management. A hint: the
    /// range may or may not read as zeros afterwards (see DLFEAT). Unsupported → error.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if !self.ctrl.info.supports_dsm() {
            return Err(Error::unsupported(
                "NVMe controller does not support Dataset Management",
            ));
        }
        let bs = self.info.lba_size as u64;
        const MAX_RANGE: u64 = u32::MAX as u64;
        const RANGES_PER_CMD: u64 = 256;
        let first = offset / bs;
        let blocks = len / bs;
        let nranges = blocks.div_ceil(MAX_RANGE);
        let count = nranges.div_ceil(RANGES_PER_CMD) as usize;
        let nsid = self.info.nsid;
        let mut q = self.ctrl.queue()?;
        q.run(
            &self.ctrl.bar,
            count,
            "Dataset Management",
            |i, slot| {
                let r0 = i as u64 * RANGES_PER_CMD;
                let nr = RANGES_PER_CMD.min(nranges - r0);
                let list = slot.buf.bytes_mut(0, 16 * nr as usize);
                for (k, e) in list.chunks_exact_mut(16).enumerate() {
                    let r = r0 + k as u64;
                    let lba = first + r * MAX_RANGE;
                    let n = MAX_RANGE.min(blocks - r * MAX_RANGE);
                    e[0..4].copy_from_slice(&0u32.to_le_bytes());
                    e[4..8].copy_from_slice(&(n as u32).to_le_bytes());
                    e[8..16].copy_from_slice(&lba.to_le_bytes());
                }
                Sqe::new(OP_DSM, nsid)
                    .prps(slot.buf.iova(0), 0)
                    .cdw(10, (nr - 1) as u32)
                    .cdw(11, 1 << 2)
            },
            |_, _| {},
        )
        .map_err(|e| e.with_offset(offset))
    }
}
