//! The Node API of the userspace NVMe driver (issue #9): `NvmeController` (open by PCI address,
//! identify, namespaces, close) and `NvmeNamespace` (async read/write/flush/writeZeroes/discard).
//! Failed commands reject with a QimgError carrying `nvmeStatusCodeType`/`nvmeStatusCode`.
use crate::error::{invalid, to_u64};
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_nvme::fast::{InFlight, Start};
use qimg_nvme::{Controller, Namespace};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Identify Controller fields.
#[napi(object)]
pub struct NvmeIdentify {
    /// PCI address.
    pub device: String,
    /// PCI vendor ID.
    pub vendor_id: u32,
    /// PCI subsystem vendor ID.
    pub subsystem_vendor_id: u32,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Controller ID.
    pub controller_id: u32,
    /// NVMe version as "major.minor.tertiary".
    pub version: String,
    /// Number of namespaces (highest NSID).
    pub namespace_count: u32,
    /// Maximum data transfer size in bytes (0 = no limit).
    pub max_transfer: f64,
    /// Bytes per command qimg uses (min of MDTS and 128 KiB).
    pub transfer_chunk: u32,
    /// I/O queue pairs in use.
    pub io_queues: u32,
    /// Dataset Management supported.
    pub dsm: bool,
    /// Write Zeroes supported.
    pub write_zeroes: bool,
    /// Volatile write cache present.
    pub volatile_write_cache: bool,
}

/// I/O command counters.
#[napi(object)]
pub struct NvmeStats {
    /// Read/write commands whose data moved without a copy.
    pub direct_commands: f64,
    /// Read/write commands copied through bounce buffers.
    pub bounce_commands: f64,
}

/// Parameters of `NvmeNamespace.bench` (qemu-img bench's).
#[napi(object)]
pub struct NvmeBenchOptions {
    /// Requests to send.
    pub count: f64,
    /// Requests in flight (capped at one queue's slots).
    pub depth: u32,
    /// Offset of the first request.
    pub offset: f64,
    /// Bytes per request.
    pub buffer_size: u32,
    /// Offset increment.
    pub step_size: f64,
    /// Write instead of read.
    pub write: bool,
    /// Byte written by write runs.
    pub pattern: u32,
    /// Flush (after draining) every this many requests; 0 = never.
    pub flush_interval: f64,
}

/// What `NvmeNamespace.bench` measured.
#[napi(object)]
pub struct NvmeBenchResult {
    /// Requests completed.
    pub requests: f64,
    /// Seconds from the first request to the last completion (and flush).
    pub seconds: f64,
    /// Requests kept in flight.
    pub depth: u32,
}

/// An NVMe controller bound to vfio-pci, driven from userspace. Close it explicitly (it is also
/// shut down when garbage-collected and at process exit).
#[napi]
pub struct NvmeController {
    slot: Arc<Mutex<Option<Arc<Controller>>>>,
}

impl NvmeController {
    fn ctrl(&self) -> qimg_core::Result<Arc<Controller>> {
        self.slot
            .lock()
            .map_err(|_| invalid("controller lock poisoned"))?
            .clone()
            .ok_or_else(|| invalid("the NVMe controller is closed"))
    }
}

#[napi]
impl NvmeController {
    /// Open the controller at PCI address `bdf` (`DDDD:BB:SS.F`).
    #[napi(ts_return_type = "Promise<NvmeController>")]
    pub fn open(bdf: String) -> AsyncTask<Work<NvmeController>> {
        spawn(None, move || {
            let c = Controller::open(&bdf).map_err(|e| e.with_path(&bdf))?;
            Ok(NvmeController {
                slot: Arc::new(Mutex::new(Some(c))),
            })
        })
    }

    /// Identify Controller (as read at open).
    #[napi]
    pub fn identify(&self) -> Result<NvmeIdentify> {
        let c = self.ctrl().map_err(crate::error::to_napi)?;
        let i = &c.info;
        let mdts = if i.mdts == 0 {
            0.0
        } else {
            (4096u64 << i.mdts.min(40)) as f64
        };
        Ok(NvmeIdentify {
            device: c.bdf.clone(),
            vendor_id: i.vid as u32,
            subsystem_vendor_id: i.ssvid as u32,
            serial: i.serial.clone(),
            model: i.model.clone(),
            firmware: i.firmware.clone(),
            controller_id: i.cntlid as u32,
            version: format!(
                "{}.{}.{}",
                i.version >> 16,
                (i.version >> 8) & 0xff,
                i.version & 0xff
            ),
            namespace_count: i.nn,
            max_transfer: mdts,
            transfer_chunk: c.chunk_bytes as u32,
            io_queues: c.io_queue_count() as u32,
            dsm: i.supports_dsm(),
            write_zeroes: i.supports_write_zeroes(),
            volatile_write_cache: i.vwc,
        })
    }

    /// A Buffer over DMA-mapped memory: reads into it and writes from it go straight between the
    /// controller and this memory, without the bounce-buffer copy (any slice of it works; at most
    /// 64 MiB). It stays valid after `close()`.
    #[napi]
    pub fn alloc_buffer<'env>(&self, env: &'env Env, size: u32) -> Result<BufferSlice<'env>> {
        let c = self.ctrl().map_err(crate::error::to_napi)?;
        let b = c.alloc_dma(size as usize).map_err(crate::error::to_napi)?;
        let ptr = b.as_ptr();
        // SAFETY: `ptr` points to `size` bytes of the mapping `b` owns; `b` (an Arc) is moved
        // into the finalizer, so the memory lives until JavaScript drops the Buffer.
        unsafe { BufferSlice::from_external(env, ptr, size as usize, b, |_, b| drop(b)) }
    }

    /// Commands whose data went directly to/from DMA buffers from `allocBuffer`, and commands
    /// copied through the driver's bounce buffers, since open.
    #[napi]
    pub fn stats(&self) -> Result<NvmeStats> {
        let c = self.ctrl().map_err(crate::error::to_napi)?;
        Ok(NvmeStats {
            direct_commands: c.direct_ops.load(std::sync::atomic::Ordering::Relaxed) as f64,
            bounce_commands: c.bounce_ops.load(std::sync::atomic::Ordering::Relaxed) as f64,
        })
    }

    /// Active namespace IDs.
    #[napi(ts_return_type = "Promise<number[]>")]
    pub fn namespaces(&self) -> AsyncTask<Work<Vec<u32>>> {
        let c = self.ctrl();
        spawn(None, move || c?.namespaces())
    }

    /// Open namespace `nsid`.
    #[napi(ts_return_type = "Promise<NvmeNamespace>")]
    pub fn namespace(&self, nsid: u32) -> AsyncTask<Work<NvmeNamespace>> {
        let c = self.ctrl();
        spawn(None, move || {
            Ok(NvmeNamespace {
                ns: Namespace::open(&c?, nsid)?,
                pending: Arc::new(Mutex::new(HashMap::new())),
                next_token: AtomicU32::new(1),
            })
        })
    }

    /// Delete the I/O queues and shut the controller down (CC.SHN). Namespaces opened from it
    /// fail afterwards.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<Work<()>> {
        let c = self.slot.lock().ok().and_then(|mut g| g.take());
        spawn(None, move || match c {
            Some(c) => c.close(),
            None => Ok(()),
        })
    }
}

/// Commands left in flight by `startIo` with the Buffer each uses, by token.
type PendingMap = HashMap<u32, (Box<InFlight>, Buffer)>;

/// One namespace: block-aligned async I/O.
#[napi]
pub struct NvmeNamespace {
    ns: Namespace,
    /// Commands `startIo` left in flight, with the Buffer they use, by token.
    pending: Arc<Mutex<PendingMap>>,
    next_token: AtomicU32,
}

#[napi]
impl NvmeNamespace {
    /// Namespace ID.
    #[napi(getter)]
    pub fn nsid(&self) -> u32 {
        self.ns.info.nsid
    }
    /// Size in bytes.
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.ns.size() as f64
    }
    /// Logical block size in bytes.
    #[napi(getter)]
    pub fn block_size(&self) -> u32 {
        self.ns.info.lba_size
    }
    /// Blocks in use (NUSE, as identified at open).
    #[napi(getter)]
    pub fn blocks_in_use(&self) -> f64 {
        self.ns.info.nuse as f64
    }

    /// Read `buf.length` bytes at `offset` (both multiples of the block size) into `buf`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn read(&self, offset: f64, mut buf: Buffer) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        spawn(None, move || {
            ns.read(to_u64(offset, "offset")?, buf.as_mut())
        })
    }

    /// Write `buf` at `offset` (both multiples of the block size).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write(&self, offset: f64, buf: Buffer) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        spawn(None, move || {
            ns.write(to_u64(offset, "offset")?, buf.as_ref())
        })
    }

    /// The low-latency path: submit a read into (or write from) `buf` at `offset` as commands on
    /// a free queue from this thread and, when `poll` (the TS layer always asks), poll the completions
    /// briefly (QIMG_NVME_SPIN_US). Returns 0 when done, a positive token to pass to `finishIo`
    /// when still in flight (`buf` is kept until then), or -1 when not taken (no free queue,
    /// more commands than a queue's slots, invalid: use `read`/`write`).
    #[napi]
    pub fn start_io(&self, write: bool, offset: f64, mut buf: Buffer, poll: bool) -> Result<i32> {
        let off = to_u64(offset, "offset").map_err(crate::error::to_napi)?;
        let len = buf.len();
        let ptr = buf.as_mut().as_mut_ptr();
        let budget = if poll {
            qimg_nvme::queue::spin_budget()
        } else {
            std::time::Duration::ZERO
        };
        // SAFETY: `buf` stays alive (moved into `pending`) until the command is finished; its
        // backing store does not move.
        match unsafe { self.ns.start(write, off, ptr, len, budget) } {
            Ok(Start::Done) => Ok(0),
            Ok(Start::NotTaken) => Ok(-1),
            Ok(Start::Pending(f)) => {
                let t = self.next_token.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff;
                let t = t.max(1);
                self.pending
                    .lock()
                    .map_err(|_| crate::error::to_napi(invalid("lock poisoned")))?
                    .insert(t, (f, buf));
                Ok(t as i32)
            }
            Err(e) => Err(crate::error::to_napi(e)),
        }
    }

    /// Wait (off the JavaScript thread) for a command `startIo` left in flight.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn finish_io(&self, token: u32) -> AsyncTask<Work<()>> {
        let pending = self.pending.clone();
        spawn(None, move || {
            let (f, mut buf) = pending
                .lock()
                .map_err(|_| invalid("lock poisoned"))?
                .remove(&token)
                .ok_or_else(|| invalid("no such NVMe request in flight"))?;
            let len = buf.len();
            // SAFETY: the same Buffer (alive, owned here) and length given to `start`.
            unsafe { f.finish(buf.as_mut().as_mut_ptr(), len) }
        })
    }

    /// Read `buf.length` bytes at `offset` into `buf` on the calling (JavaScript) thread: the
    /// command is submitted and its completion polled here, without the thread-pool hop of
    /// `read` — the lowest latency at queue depth 1, but it blocks the event loop meanwhile.
    #[napi]
    pub fn read_sync(&self, offset: f64, mut buf: Buffer) -> Result<()> {
        let off = to_u64(offset, "offset").map_err(crate::error::to_napi)?;
        self.ns
            .read(off, buf.as_mut())
            .map_err(crate::error::to_napi)
    }

    /// Write `buf` at `offset` on the calling thread (see `readSync`).
    #[napi]
    pub fn write_sync(&self, offset: f64, buf: Buffer) -> Result<()> {
        let off = to_u64(offset, "offset").map_err(crate::error::to_napi)?;
        self.ns
            .write(off, buf.as_ref())
            .map_err(crate::error::to_napi)
    }

    /// qemu-img bench's loop run natively on one queue (see `NvmeBenchOptions`); resolves with
    /// what it measured, or `null` when the parameters need the generic path (unaligned sizes
    /// or offsets, a request over 64 MiB, a first request beyond the end).
    #[napi(ts_return_type = "Promise<NvmeBenchResult | null>")]
    pub fn bench(&self, o: NvmeBenchOptions) -> AsyncTask<Work<Option<NvmeBenchResult>>> {
        let ns = self.ns.clone();
        spawn(None, move || {
            let p = qimg_nvme::bench::BenchParams {
                count: to_u64(o.count, "count")?,
                depth: o.depth.max(1) as usize,
                offset: to_u64(o.offset, "offset")?,
                buffer_size: o.buffer_size as usize,
                step: to_u64(o.step_size, "step size")?,
                write: o.write,
                pattern: o.pattern as u8,
                flush_interval: to_u64(o.flush_interval, "flush interval")?,
            };
            if !ns.bench_supported(&p) {
                return Ok(None);
            }
            let r = ns.bench(&p)?;
            Ok(Some(NvmeBenchResult {
                requests: r.requests as f64,
                seconds: r.seconds,
                depth: r.depth as u32,
            }))
        })
    }

    /// Read into each `bufs[i]` at `offsets[i]` (block aligned) with every command in flight at
    /// once on one queue: a whole queue depth in one call.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn read_batch(&self, offsets: Vec<f64>, bufs: Vec<Buffer>) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        let mut bufs = bufs;
        spawn(None, move || {
            if offsets.len() != bufs.len() {
                return Err(invalid("offsets and buffers differ in number"));
            }
            let offs = offsets
                .iter()
                .map(|o| to_u64(*o, "offset"))
                .collect::<qimg_core::Result<Vec<_>>>()?;
            let mut reqs: Vec<(u64, &mut [u8])> = offs
                .into_iter()
                .zip(bufs.iter_mut().map(|b| b.as_mut()))
                .collect();
            ns.read_batch(&mut reqs)
        })
    }

    /// Write each `bufs[i]` at `offsets[i]` (block aligned), all commands in flight at once.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_batch(&self, offsets: Vec<f64>, bufs: Vec<Buffer>) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        spawn(None, move || {
            if offsets.len() != bufs.len() {
                return Err(invalid("offsets and buffers differ in number"));
            }
            let offs = offsets
                .iter()
                .map(|o| to_u64(*o, "offset"))
                .collect::<qimg_core::Result<Vec<_>>>()?;
            let reqs: Vec<(u64, &[u8])> = offs
                .into_iter()
                .zip(bufs.iter().map(|b| b.as_ref()))
                .collect();
            ns.write_batch(&reqs)
        })
    }

    /// Flush the controller's volatile write cache.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn flush(&self) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        spawn(None, move || ns.flush())
    }

    /// Write Zeroes over `length` bytes at `offset` (block aligned); `deallocate` sets DEAC.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_zeroes(
        &self,
        offset: f64,
        length: f64,
        deallocate: Option<bool>,
    ) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        spawn(None, move || {
            ns.write_zeroes(
                to_u64(offset, "offset")?,
                to_u64(length, "length")?,
                deallocate.unwrap_or(false),
            )
        })
    }

    /// Deallocate `length` bytes at `offset` (block aligned) with Dataset Management.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn discard(&self, offset: f64, length: f64) -> AsyncTask<Work<()>> {
        let ns = self.ns.clone();
        spawn(None, move || {
            ns.discard(to_u64(offset, "offset")?, to_u64(length, "length")?)
        })
    }
}
