//! `qimg bench` on a namespace, run natively: qemu-img bench's loop (`count` requests of
//! `buffer_size` bytes, `depth` in flight, starting at `offset` and advancing by `step`, wrapping
//! modulo `size - buffer_size`, a flush every `flush_interval` requests after draining) driven
//! straight on one I/O queue, as qemu-img runs its loop in C inside the block layer: no
//! JavaScript, no thread hop per request. Data moves from/to one DMA buffer per slot (no copies).
use crate::err::{Error, Result};
use crate::io::{prps_direct, Namespace, OP_FLUSH, OP_READ, OP_WRITE};
use crate::queue::Sqe;
use std::time::Instant;

/// What to run (qemu-img bench's options).
#[derive(Debug, Clone)]
pub struct BenchParams {
    /// Requests to send.
    pub count: u64,
    /// Requests in flight (capped at the queue's slots).
    pub depth: usize,
    /// Offset of the first request.
    pub offset: u64,
    /// Bytes per request (a multiple of the block size, at most 64 MiB).
    pub buffer_size: usize,
    /// Offset increment.
    pub step: u64,
    /// Write instead of read.
    pub write: bool,
    /// Byte written by write runs.
    pub pattern: u8,
    /// Flush (after draining) every this many requests; 0 = never.
    pub flush_interval: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy)]
pub struct BenchReport {
    /// Requests completed.
    pub requests: u64,
    /// Seconds from the first submission to the last completion (and flush).
    pub seconds: f64,
    /// Requests actually kept in flight.
    pub depth: usize,
}

/// The offset after `offset`, wrapped as qemu-img wraps it.
pub fn next_offset(offset: u64, step: u64, buffer_size: u64, size: u64) -> u64 {
    if size <= buffer_size {
        return 0;
    }
    (offset + step) % (size - buffer_size)
}

impl Namespace {
    /// Whether [`Namespace::bench`] can run these parameters (block-aligned sizes and offsets,
    /// every request inside the namespace); otherwise run it generically.
    pub fn bench_supported(&self, p: &BenchParams) -> bool {
        let bs = self.block_size() as u64;
        let b = p.buffer_size as u64;
        b > 0
            && b.is_multiple_of(bs)
            && p.buffer_size <= 64 << 20
            && p.offset.is_multiple_of(bs)
            && p.step.is_multiple_of(bs)
            && p.offset.checked_add(b).is_some_and(|e| e <= self.size())
            && p.depth >= 1
    }

    /// Run the benchmark; the first failed request ends it with that error. A request larger than
    /// one command's transfer (MDTS) is split into several commands, all in flight together.
    pub fn bench(&self, p: &BenchParams) -> Result<BenchReport> {
        if !self.bench_supported(p) {
            return Err(Error::invalid(
                "NVMe bench: sizes and offsets must be block aligned, requests at most 64 MiB",
            ));
        }
        let size = self.size();
        let bs = self.block_size() as u64;
        let len = p.buffer_size;
        let chunk = self.ctrl.direct_chunk.min(len);
        let per = len.div_ceil(chunk);
        let mut q = self.ctrl.queue()?;
        // Requests in flight: as asked, within the queue's slots (at least one whole request).
        let depth = p
            .depth
            .min((q.slots.len() / per).max(1))
            .min(p.count.max(1) as usize);
        let limit = (depth * per).min(q.slots.len());
        let mem = self.ctrl.alloc_dma(limit * chunk)?;
        if p.write {
            // SAFETY: `mem` owns `limit * chunk` writable bytes and no command uses them yet.
            unsafe { std::ptr::write_bytes(mem.as_ptr(), p.pattern, limit * chunk) };
        }
        let (op, what) = if p.write {
            (OP_WRITE, "Write")
        } else {
            (OP_READ, "Read")
        };
        let nsid = self.info.nsid;
        let bar = &self.ctrl.bar;
        let mut offset = p.offset;
        let mut at = offset;
        let mut done = 0u64;
        let t0 = Instant::now();
        while done < p.count {
            let n = if p.flush_interval > 0 {
                p.flush_interval.min(p.count - done)
            } else {
                p.count - done
            };
            q.run_limited(
                bar,
                n as usize * per,
                limit,
                what,
                |i, slot| {
                    let part = i % per;
                    if part == 0 {
                        at = offset;
                        offset = next_offset(offset, p.step, len as u64, size);
                    }
                    let n = chunk.min(len - part * chunk);
                    let pr = prps_direct(slot, mem.iova(slot.id * chunk), n);
                    self.rw_sqe(op, (at + (part * chunk) as u64) / bs, n, pr)
                },
                |_, _| {},
            )?;
            done += n;
            if p.flush_interval > 0 && done.is_multiple_of(p.flush_interval) {
                q.run(bar, 1, "Flush", |_, _| Sqe::new(OP_FLUSH, nsid), |_, _| {})?;
            }
        }
        self.ctrl
            .direct_ops
            .fetch_add(done as usize * per, std::sync::atomic::Ordering::Relaxed);
        Ok(BenchReport {
            requests: done,
            seconds: t0.elapsed().as_secs_f64(),
            depth,
        })
    }
}
