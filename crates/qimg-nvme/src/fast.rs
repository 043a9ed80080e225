//! The low-latency path for a lone request: one read or write command submitted from the caller's
//! own thread on a queue taken out of the pool, its completion polled there for a short budget.
//! Most single requests complete within it, with no thread hop at all; one that does not stays
//! in flight as an [`InFlight`] that any thread finishes ([`InFlight::finish`]).
use crate::controller::IoQueue;
use crate::err::{Error, ErrorCode, Result};
use crate::io::{prps, prps_direct, Namespace, OP_READ, OP_WRITE};
use std::time::{Duration, Instant};

/// A command submitted by [`Namespace::start`] that had not completed within the budget. It owns
/// its queue (taken out of the pool) until finished; dropping it unfinished waits for it.
#[derive(Debug)]
pub struct InFlight {
    ns: Namespace,
    queue: Option<(usize, IoQueue)>,
    write: bool,
    direct: bool,
    offset: u64,
}

/// What [`Namespace::start`] did.
#[derive(Debug)]
pub enum Start {
    /// Completed (successfully) within the budget; for a read the data is in the buffer.
    Done,
    /// Submitted and still in flight: finish it (the buffer must stay alive and untouched).
    Pending(Box<InFlight>),
    /// Not taken: no free queue, or a request that needs several commands, or invalid (the
    /// regular path runs it and reports any error).
    NotTaken,
}

impl Namespace {
    /// Submit a read (into `buf`) or write (from `buf`) of `len` bytes at `offset` as one command
    /// on a free queue, from this thread, and poll for its completion for `budget`.
    ///
    /// # Safety
    /// `buf` must point to `len` bytes that stay valid (and, for a read, otherwise untouched)
    /// until the returned [`Start::Pending`] is finished.
    pub unsafe fn start(
        &self,
        write: bool,
        offset: u64,
        buf: *mut u8,
        len: usize,
        budget: Duration,
    ) -> Result<Start> {
        if len == 0 || self.check(offset, len as u64).is_err() {
            return Ok(Start::NotTaken);
        }
        let direct = self.ctrl.dma_iova(buf, len);
        let chunk = if direct.is_some() {
            self.ctrl.direct_chunk
        } else {
            self.ctrl.chunk_bytes
        };
        if len > chunk {
            return Ok(Start::NotTaken);
        }
        let Some((idx, mut q)) = self.ctrl.take_queue() else {
            return Ok(Start::NotTaken);
        };
        let slot = &mut q.slots[0];
        let p = match direct {
            Some(iova) => prps_direct(slot, iova, len),
            None => {
                if write {
                    // SAFETY: the caller guarantees `len` readable bytes at `buf`.
                    let src = unsafe { std::slice::from_raw_parts(buf, len) };
                    slot.buf.bytes_mut(0, len).copy_from_slice(src);
                }
                prps(slot, len)
            }
        };
        let op = if write { OP_WRITE } else { OP_READ };
        let sqe = self.rw_sqe(op, offset / self.block_size() as u64, len, p);
        self.count_ops(direct.is_some(), 1);
        q.qp.submit(&self.ctrl.bar, sqe, 0);
        let mut f = InFlight {
            ns: self.clone(),
            queue: Some((idx, q)),
            write,
            direct: direct.is_some(),
            offset,
        };
        let t0 = Instant::now();
        loop {
            if let Some(r) = f.try_complete(buf, len) {
                return r.map(|_| Start::Done);
            }
            if t0.elapsed() >= budget {
                return Ok(Start::Pending(Box::new(f)));
            }
            std::hint::spin_loop();
        }
    }
}

impl InFlight {
    /// The completion, if posted: checked, the bounce data copied into `buf` for a read, and
    /// the queue given back.
    fn try_complete(&mut self, buf: *mut u8, len: usize) -> Option<Result<()>> {
        let (_, q) = self.queue.as_mut()?;
        let c = q.qp.poll(&self.ns.ctrl.bar)?;
        Some(self.complete(Ok(c), buf, len))
    }

    fn complete(&mut self, c: Result<crate::queue::Cqe>, buf: *mut u8, len: usize) -> Result<()> {
        let (idx, mut q) = self.queue.take().expect("completed once");
        let r = c.and_then(|c| {
            if c.cid != 0 {
                return Err(Error::new(
                    ErrorCode::Io,
                    format!("NVMe completion for unknown command id {}", c.cid),
                ));
            }
            c.check(if self.write { "Write" } else { "Read" })
                .map(|_| ())
        });
        match &r {
            Ok(()) if !self.write && !self.direct => {
                // SAFETY: the caller of `start` guarantees `len` writable bytes at `buf`.
                let dst = unsafe { std::slice::from_raw_parts_mut(buf, len) };
                dst.copy_from_slice(q.slots[0].buf.bytes(0, len));
            }
            Err(e) if e.nvme_status.is_none() => q.broken = true,
            _ => {}
        }
        self.ns.ctrl.put_queue(idx, q);
        r.map_err(|e| e.with_offset(self.offset))
    }

    /// Wait for the command (on any thread) and give its queue back; for a read through the
    /// bounce buffer, copy the data into `buf`, the same `len` bytes passed to `start`.
    ///
    /// # Safety
    /// `buf` and `len` must be those given to [`Namespace::start`], still valid.
    pub unsafe fn finish(mut self, buf: *mut u8, len: usize) -> Result<()> {
        let (_, q) = self.queue.as_mut().expect("not finished yet");
        let c = q.qp.wait(&self.ns.ctrl.bar);
        self.complete(c, buf, len)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Never hand a queue with a command in flight back to the pool: wait for it first (its
        // data is discarded; a bounce read's buffer is not written).
        if let Some((idx, mut q)) = self.queue.take() {
            if q.qp.wait(&self.ns.ctrl.bar).is_err() {
                q.broken = true;
            }
            self.ns.ctrl.put_queue(idx, q);
        }
    }
}
