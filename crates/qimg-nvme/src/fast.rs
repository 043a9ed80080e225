//! The low-latency path of a request: its commands submitted from the caller's own thread on a
//! queue taken out of the pool, the completions polled there for a short budget. A lone request
//! mostly completes within it, with no thread hop at all; one that does not (or that is given no
//! budget) stays in flight as an [`InFlight`] that any thread finishes ([`InFlight::finish`]),
//! the device already working on it.
use crate::controller::IoQueue;
use crate::err::{Error, ErrorCode, Result};
use crate::io::{prps, prps_direct, Namespace, OP_READ, OP_WRITE};
use std::time::{Duration, Instant};

/// Commands submitted by [`Namespace::start`] that had not all completed within the budget. It
/// owns its queue (taken out of the pool) until finished; dropping it unfinished waits for them.
#[derive(Debug)]
pub struct InFlight {
    ns: Namespace,
    queue: Option<(usize, IoQueue)>,
    write: bool,
    direct: bool,
    offset: u64,
    /// Bytes per command (the last may be shorter).
    chunk: usize,
    /// Commands submitted (command `i` uses slot `i`).
    count: usize,
    /// Commands not completed yet.
    remaining: usize,
    first_err: Option<Error>,
}

/// What [`Namespace::start`] did.
#[derive(Debug)]
pub enum Start {
    /// Completed (successfully) within the budget; for a read the data is in the buffer.
    Done,
    /// Submitted and still in flight: finish it (the buffer must stay alive and untouched).
    Pending(Box<InFlight>),
    /// Not taken: no free queue, more commands than a queue's slots, or invalid (the regular
    /// path runs it and reports any error).
    NotTaken,
}

impl Namespace {
    /// Submit a read (into `buf`) or write (from `buf`) of `len` bytes at `offset` as commands on
    /// a free queue, from this thread, and poll for their completions for `budget`.
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
        let count = len.div_ceil(chunk);
        let Some((idx, mut q)) = self.ctrl.take_queue() else {
            return Ok(Start::NotTaken);
        };
        if count > q.slots.len() {
            self.ctrl.put_queue(idx, q);
            return Ok(Start::NotTaken);
        }
        let op = if write { OP_WRITE } else { OP_READ };
        let bs = self.block_size() as u64;
        for i in 0..count {
            let at = i * chunk;
            let n = chunk.min(len - at);
            let slot = &mut q.slots[i];
            let p = match direct {
                Some(iova) => prps_direct(slot, iova + at as u64, n),
                None => {
                    if write {
                        // SAFETY: the caller guarantees `len` readable bytes at `buf`.
                        let src = unsafe { std::slice::from_raw_parts(buf.add(at), n) };
                        slot.buf.bytes_mut(0, n).copy_from_slice(src);
                    }
                    prps(slot, n)
                }
            };
            let sqe = self.rw_sqe(op, (offset + at as u64) / bs, n, p);
            q.qp.submit(&self.ctrl.bar, sqe, i as u16);
        }
        self.count_ops(direct.is_some(), count);
        let mut f = InFlight {
            ns: self.clone(),
            queue: Some((idx, q)),
            write,
            direct: direct.is_some(),
            offset,
            chunk,
            count,
            remaining: count,
            first_err: None,
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
    /// Take one completion: check it, copy a bounce read's data into `buf`.
    fn take(&mut self, c: crate::queue::Cqe, buf: *mut u8, len: usize) {
        let (_, q) = self.queue.as_mut().expect("in flight");
        let i = c.cid as usize;
        if i >= self.count {
            q.broken = true;
            self.first_err.get_or_insert(Error::new(
                ErrorCode::Io,
                format!("NVMe completion for unknown command id {i}"),
            ));
            self.remaining = 0;
            return;
        }
        self.remaining -= 1;
        match c.check(if self.write { "Write" } else { "Read" }) {
            Ok(_) if !self.write && !self.direct => {
                let at = i * self.chunk;
                let n = self.chunk.min(len - at);
                // SAFETY: the caller of `start` guarantees `len` writable bytes at `buf`.
                let dst = unsafe { std::slice::from_raw_parts_mut(buf.add(at), n) };
                dst.copy_from_slice(q.slots[i].buf.bytes(0, n));
            }
            Ok(_) => {}
            Err(e) => {
                self.first_err.get_or_insert(e);
            }
        }
    }

    /// Give the queue back and report the first failure.
    fn done(&mut self) -> Result<()> {
        if let Some((idx, q)) = self.queue.take() {
            self.ns.ctrl.put_queue(idx, q);
        }
        match self.first_err.take() {
            Some(e) => Err(e.with_offset(self.offset)),
            None => Ok(()),
        }
    }

    /// Every completion posted so far; `Some` once all are in.
    fn try_complete(&mut self, buf: *mut u8, len: usize) -> Option<Result<()>> {
        while self.remaining > 0 {
            let (_, q) = self.queue.as_mut()?;
            let c = q.qp.poll(&self.ns.ctrl.bar)?;
            self.take(c, buf, len);
        }
        Some(self.done())
    }

    /// Wait for the commands (on any thread) and give the queue back; for a read through the
    /// bounce buffers, copy the data into `buf`, the same `len` bytes passed to `start`.
    ///
    /// # Safety
    /// `buf` and `len` must be those given to [`Namespace::start`], still valid.
    pub unsafe fn finish(mut self, buf: *mut u8, len: usize) -> Result<()> {
        while self.remaining > 0 {
            let (_, q) = self.queue.as_mut().expect("in flight");
            match q.qp.wait(&self.ns.ctrl.bar) {
                Ok(c) => self.take(c, buf, len),
                Err(e) => {
                    q.broken = true;
                    self.remaining = 0;
                    self.first_err.get_or_insert(e);
                }
            }
        }
        self.done()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Never hand a queue with commands in flight back to the pool: wait for them first
        // (their data is discarded; a bounce read's buffer is not written).
        if let Some((idx, mut q)) = self.queue.take() {
            while self.remaining > 0 {
                self.remaining -= 1;
                if q.qp.wait(&self.ns.ctrl.bar).is_err() {
                    q.broken = true;
                    break;
                }
            }
            self.ns.ctrl.put_queue(idx, q);
        }
    }
}
