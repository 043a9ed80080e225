//! The NVMe controller: reset and enable with CAP's timeouts, the admin queue, Identify, Set
//! Features (number of queues), I/O queue pair creation, and shutdown (CC.SHN) on close, on drop
//! and at process exit.
use crate::dma::{DmaBuffer, IovaAllocator, PAGE};
use crate::err::{Error, ErrorCode, Result};
use crate::identify::{ControllerInfo, NamespaceInfo};
use crate::pci::{enable_bus_master, Bar0};
use crate::queue::{new_eventfd, QueuePair, Sqe, CQE_SIZE, SQE_SIZE};
use crate::regs::*;
use crate::vfio::{VfioDevice, VFIO_PCI_MSIX_IRQ_INDEX};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Admin opcodes.
const ADM_DELETE_SQ: u8 = 0x00;
const ADM_CREATE_SQ: u8 = 0x01;
const ADM_DELETE_CQ: u8 = 0x04;
const ADM_CREATE_CQ: u8 = 0x05;
const ADM_IDENTIFY: u8 = 0x06;
const ADM_SET_FEATURES: u8 = 0x09;
/// Feature: Number of Queues.
const FEAT_NUM_QUEUES: u32 = 0x07;

/// Entries in the admin queues.
const ADMIN_DEPTH: u16 = 32;
/// I/O queue pairs qimg asks for.
const WANT_IO_QUEUES: usize = 4;
/// Commands in flight per I/O queue (one data buffer each).
const SLOTS_PER_QUEUE: usize = 32;
/// Largest transfer per command through the bounce buffers (further capped by MDTS).
const MAX_CHUNK: usize = 128 * 1024;
/// Largest transfer per command from a caller's DMA buffer (further capped by MDTS): one PRP
/// list page holds 512 entries, enough for 2 MiB at any dword-aligned start.
const MAX_DIRECT_CHUNK: usize = 2 << 20;

/// One command slot of an I/O queue: its bounce buffer and its PRP list page.
#[derive(Debug)]
pub struct Slot {
    /// Index in its queue's slots (the command identifier).
    pub id: usize,
    /// Data buffer (`Controller::chunk_bytes` long).
    pub buf: DmaBuffer,
    /// One page for a PRP list.
    pub prp: DmaBuffer,
}

/// An I/O queue pair with its slots. Once a command times out the queue is `broken`.
#[derive(Debug)]
pub struct IoQueue {
    /// The SQ/CQ pair.
    pub qp: QueuePair,
    /// Command slots; the slot index is the command identifier.
    pub slots: Vec<Slot>,
    /// Set when the queue's state is unknown (a timeout): no further commands go to it.
    pub broken: bool,
}

struct Admin {
    qp: QueuePair,
    buf: DmaBuffer,
}

/// An opened controller. Share it as `Arc<Controller>`; it is shut down on [`Controller::close`]
/// or when the last reference goes.
pub struct Controller {
    /// PCI address it was opened at.
    pub bdf: String,
    dev: Mutex<Option<Arc<VfioDevice>>>,
    /// BAR0 registers.
    pub(crate) bar: Bar0,
    cap: Cap,
    admin: Mutex<Option<Admin>>,
    pub(crate) io: Vec<Mutex<Option<IoQueue>>>,
    pub(crate) next_queue: AtomicUsize,
    /// Per I/O queue: taken out of its slot by [`Controller::take_queue`] (its `Option` is then
    /// `None` without the controller being closed).
    pub(crate) checked_out: Vec<AtomicBool>,
    /// Queues checked out now: always fewer than all, so a pool user waiting for a queue waits
    /// on one another pool user holds (and releases), never on a checked-out one whose owner
    /// may wait behind it in the same thread pool.
    taken: AtomicUsize,
    /// Identify Controller.
    pub info: ControllerInfo,
    /// Bytes per command through the bounce buffers (min of MDTS and 128 KiB).
    pub chunk_bytes: usize,
    /// Bytes per command from a caller's DMA buffer (min of MDTS and 2 MiB): fewer, larger
    /// commands for zero-copy I/O, as the kernel driver sends up to MDTS.
    pub direct_chunk: usize,
    closed: AtomicBool,
    _irqs: Vec<Arc<OwnedFd>>,
    iovas: Mutex<IovaAllocator>,
    /// DMA buffers handed out by [`Controller::alloc_dma`] (for zero-copy I/O).
    user_bufs: Mutex<Vec<Weak<DmaBuffer>>>,
    /// Commands whose data went straight to/from a caller's DMA buffer.
    pub direct_ops: AtomicUsize,
    /// Commands whose data was copied through a slot's bounce buffer.
    pub bounce_ops: AtomicUsize,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("bdf", &self.bdf)
            .field("model", &self.info.model)
            .finish()
    }
}

/// Controllers to shut down at process exit.
static OPEN: Mutex<Vec<Weak<Controller>>> = Mutex::new(Vec::new());
static ATEXIT: std::sync::Once = std::sync::Once::new();

extern "C" fn shutdown_all_at_exit() {
    let list = match OPEN.try_lock() {
        Ok(l) => l.clone(),
        Err(_) => return,
    };
    for c in list.iter().filter_map(Weak::upgrade) {
        // A panic must not unwind out of an extern "C" fn.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.shutdown_registers()));
    }
}

fn wait_csts(bar: &Bar0, mask: u32, want: u32, timeout_ms: u64, what: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let v = bar.read32(CSTS);
        if v == u32::MAX {
            return Err(Error::new(
                ErrorCode::Io,
                "NVMe controller is not responding (CSTS reads all ones)",
            ));
        }
        if v & mask == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_millis(timeout_ms) {
            return Err(Error::new(
                ErrorCode::Io,
                format!("NVMe controller timed out {what} (CSTS {v:#x}, {timeout_ms} ms)"),
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Validate a `DDDD:BB:SS.F` PCI address.
pub fn check_bdf(bdf: &str) -> Result<()> {
    let b = bdf.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    let ok = b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11]);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid PCI address '{bdf}' (expected DDDD:BB:SS.F)"
        )))
    }
}

impl Controller {
    /// Open the NVMe controller at PCI address `bdf` (bound to vfio-pci): map it, reset it, set
    /// up MSI-X, enable it, identify it and create its I/O queues.
    pub fn open(bdf: &str) -> Result<Arc<Self>> {
        check_bdf(bdf)?;
        let bdf = bdf.to_ascii_lowercase();
        let dev = Arc::new(VfioDevice::open(&bdf)?);
        enable_bus_master(&dev)?;
        let bar = Bar0::map(&dev)?;
        let cap = Cap::parse(bar.read64(CAP));
        if !cap.css_nvm {
            return Err(Error::unsupported(
                "NVMe controller lacks the NVM command set",
            ));
        }
        if cap.mps_min > PAGE {
            return Err(Error::unsupported(format!(
                "NVMe controller's minimum page size {} is not supported",
                cap.mps_min
            )));
        }
        if bar.len() < cap.cq_doorbell(WANT_IO_QUEUES as u16) + 4 {
            return Err(Error::unsupported(
                "NVMe doorbells lie outside the mapped BAR0",
            ));
        }
        let iovas = Mutex::new(IovaAllocator::new(dev.iova_ranges.clone()));

        // Reset: clear EN and wait for RDY to drop.
        let cc = bar.read32(CC);
        if cc & CC_EN != 0 {
            bar.write32(CC, cc & !CC_EN);
        }
        wait_csts(&bar, CSTS_RDY, 0, cap.timeout_ms, "resetting")?;

        // MSI-X: one eventfd per vector (admin + each I/O queue), routed BEFORE CC.EN=1.
        let vectors = dev.irq_count(VFIO_PCI_MSIX_IRQ_INDEX)? as usize;
        if vectors == 0 {
            return Err(Error::unsupported("NVMe controller has no MSI-X vectors"));
        }
        let nirq = vectors.min(WANT_IO_QUEUES + 1);
        let irqs = (0..nirq)
            .map(|_| new_eventfd())
            .collect::<Result<Vec<_>>>()?;
        dev.set_msix_eventfds(&irqs.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>())?;

        // Admin queue.
        let adepth = (ADMIN_DEPTH as u32).min(cap.mqes) as u16;
        let asq = DmaBuffer::new(&dev, &iovas, adepth as usize * SQE_SIZE)?;
        let acq = DmaBuffer::new(&dev, &iovas, adepth as usize * CQE_SIZE)?;
        bar.write32(AQA, ((adepth as u32 - 1) << 16) | (adepth as u32 - 1));
        bar.write64(ASQ, asq.iova(0));
        bar.write64(ACQ, acq.iova(0));
        let admin = Admin {
            qp: QueuePair::new(0, adepth, asq, acq, &cap, irqs[0].clone()),
            buf: DmaBuffer::new(&dev, &iovas, PAGE)?,
        };
        bar.write32(CC, CC_BASE | CC_EN);
        wait_csts(
            &bar,
            CSTS_RDY | CSTS_CFS,
            CSTS_RDY,
            cap.timeout_ms,
            "enabling",
        )?;

        let mut ctrl = Controller {
            bdf,
            dev: Mutex::new(Some(dev.clone())),
            bar,
            cap,
            admin: Mutex::new(Some(admin)),
            io: Vec::new(),
            next_queue: AtomicUsize::new(0),
            checked_out: Vec::new(),
            taken: AtomicUsize::new(0),
            info: ControllerInfo::parse(&[0u8; 4096]),
            chunk_bytes: MAX_CHUNK,
            direct_chunk: MAX_DIRECT_CHUNK,
            closed: AtomicBool::new(false),
            _irqs: irqs.clone(),
            iovas,
            user_bufs: Mutex::new(Vec::new()),
            direct_ops: AtomicUsize::new(0),
            bounce_ops: AtomicUsize::new(0),
        };
        let mut page = vec![0u8; PAGE];
        ctrl.admin_cmd(
            Sqe::new(ADM_IDENTIFY, 0).cdw(10, 1),
            Some(&mut page),
            "Identify Controller",
        )?;
        ctrl.info = ControllerInfo::parse(&page);
        if ctrl.info.mdts != 0 {
            let mdts = (cap.mps_min as u64) << ctrl.info.mdts.min(20);
            ctrl.chunk_bytes = (mdts as usize).min(MAX_CHUNK);
            ctrl.direct_chunk = (mdts as usize).min(MAX_DIRECT_CHUNK);
        }

        // Queue counts: ask for WANT, take what is granted (and what we have vectors for).
        let want = WANT_IO_QUEUES.min(nirq.saturating_sub(1)).max(1) as u32;
        let got = ctrl.admin_cmd(
            Sqe::new(ADM_SET_FEATURES, 0)
                .cdw(10, FEAT_NUM_QUEUES)
                .cdw(11, ((want - 1) << 16) | (want - 1)),
            None,
            "Set Features (Number of Queues)",
        )?;
        let nq = want.min((got & 0xffff) + 1).min((got >> 16) + 1) as usize;
        let depth = ((SLOTS_PER_QUEUE + 1) as u32).min(cap.mqes) as u16;
        for i in 0..nq {
            let qid = (i + 1) as u16;
            let vector = if qid as usize >= nirq { 0 } else { qid };
            let sq = DmaBuffer::new(&dev, &ctrl.iovas, depth as usize * SQE_SIZE)?;
            let cq = DmaBuffer::new(&dev, &ctrl.iovas, depth as usize * CQE_SIZE)?;
            let size_qid = ((depth as u32 - 1) << 16) | qid as u32;
            ctrl.admin_cmd(
                Sqe::new(ADM_CREATE_CQ, 0)
                    .prps(cq.iova(0), 0)
                    .cdw(10, size_qid)
                    .cdw(11, ((vector as u32) << 16) | 0b11),
                None,
                "Create I/O Completion Queue",
            )?;
            ctrl.admin_cmd(
                Sqe::new(ADM_CREATE_SQ, 0)
                    .prps(sq.iova(0), 0)
                    .cdw(10, size_qid)
                    .cdw(11, ((qid as u32) << 16) | 1),
                None,
                "Create I/O Submission Queue",
            )?;
            let slots = (0..depth as usize - 1)
                .map(|id| {
                    Ok(Slot {
                        id,
                        buf: DmaBuffer::new(&dev, &ctrl.iovas, ctrl.chunk_bytes)?,
                        prp: DmaBuffer::new(&dev, &ctrl.iovas, PAGE)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            ctrl.checked_out.push(AtomicBool::new(false));
            ctrl.io.push(Mutex::new(Some(IoQueue {
                qp: QueuePair::new(qid, depth, sq, cq, &cap, irqs[vector as usize].clone()),
                slots,
                broken: false,
            })));
        }
        let ctrl = Arc::new(ctrl);
        if let Ok(mut l) = OPEN.lock() {
            l.retain(|w| w.strong_count() > 0);
            l.push(Arc::downgrade(&ctrl));
        }
        ATEXIT.call_once(|| {
            // SAFETY: registering a plain extern "C" fn with no captured state.
            unsafe { libc::atexit(shutdown_all_at_exit) };
        });
        Ok(ctrl)
    }

    /// Run one admin command (with a 4 KiB data page when `data` is given) and return DW0.
    pub fn admin_cmd(&self, sqe: Sqe, data: Option<&mut [u8]>, what: &str) -> Result<u32> {
        let mut g = self
            .admin
            .lock()
            .map_err(|_| Error::invalid("NVMe admin queue lock poisoned"))?;
        let a = g
            .as_mut()
            .ok_or_else(|| Error::invalid("the NVMe controller is closed"))?;
        let sqe = match &data {
            Some(d) => {
                let n = d.len().min(PAGE);
                a.buf.bytes_mut(0, PAGE).fill(0);
                a.buf.bytes_mut(0, n).copy_from_slice(&d[..n]);
                sqe.prps(a.buf.iova(0), 0)
            }
            None => sqe,
        };
        a.qp.submit(&self.bar, sqe, 0);
        let c = a.qp.wait(&self.bar)?;
        let r = c.check(what)?;
        if let Some(d) = data {
            let n = d.len().min(PAGE);
            d[..n].copy_from_slice(a.buf.bytes(0, n));
        }
        Ok(r)
    }

    /// Identify Namespace `nsid`.
    pub fn identify_namespace(&self, nsid: u32) -> Result<NamespaceInfo> {
        if nsid == 0 || nsid > self.info.nn {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!(
                    "NVMe namespace {nsid} does not exist (controller has {})",
                    self.info.nn
                ),
            ));
        }
        let mut page = vec![0u8; PAGE];
        self.admin_cmd(
            Sqe::new(ADM_IDENTIFY, nsid).cdw(10, 0),
            Some(&mut page),
            "Identify Namespace",
        )?;
        NamespaceInfo::parse(nsid, &page)
    }

    /// Active namespace IDs (Identify CNS 02h).
    pub fn namespaces(&self) -> Result<Vec<u32>> {
        let mut page = vec![0u8; PAGE];
        self.admin_cmd(
            Sqe::new(ADM_IDENTIFY, 0).cdw(10, 2),
            Some(&mut page),
            "Identify Active Namespace List",
        )?;
        Ok(page
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .take_while(|&n| n != 0)
            .collect())
    }

    /// A DMA-mapped buffer of `len` bytes (at most 64 MiB) for zero-copy I/O: reads and writes
    /// whose data lies inside it skip the bounce buffers. Stays valid after the controller closes.
    pub fn alloc_dma(&self, len: usize) -> Result<Arc<DmaBuffer>> {
        if len == 0 || len > 64 << 20 {
            return Err(Error::invalid("DMA buffer size must be 1 byte to 64 MiB"));
        }
        let dev = self
            .dev
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .ok_or_else(|| Error::invalid("the NVMe controller is closed"))?;
        let b = Arc::new(DmaBuffer::new(&dev, &self.iovas, len)?);
        if let Ok(mut l) = self.user_bufs.lock() {
            l.retain(|w| w.strong_count() > 0);
            l.push(Arc::downgrade(&b));
        }
        Ok(b)
    }

    /// The IOVA of `len` bytes at `ptr` if they lie in a live buffer from [`Self::alloc_dma`].
    pub(crate) fn dma_iova(&self, ptr: *const u8, len: usize) -> Option<u64> {
        let l = self.user_bufs.lock().ok()?;
        l.iter()
            .filter_map(Weak::upgrade)
            .find_map(|b| b.iova_of(ptr, len))
            .filter(|i| i % 4 == 0)
    }

    /// Number of I/O queue pairs.
    pub fn io_queue_count(&self) -> usize {
        self.io.len()
    }

    /// Lock an I/O queue: a free one if any (round robin), else wait for one.
    pub(crate) fn queue(&self) -> Result<QueueGuard<'_>> {
        let closed = || Error::invalid("the NVMe controller is closed");
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let n = self.io.len();
        let start = self.next_queue.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(g) = self.io[(start + i) % n].try_lock() {
                if g.as_ref().is_some_and(|q| !q.broken) {
                    return Ok(QueueGuard(g));
                }
            }
        }
        // Wait on a queue that is not checked out (one is always back within a command's time).
        let mut waited = 0u32;
        let start = loop {
            if let Some(j) = (0..n)
                .map(|i| (start + i) % n)
                .find(|&j| !self.checked_out[j].load(Ordering::Acquire))
            {
                break j;
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(closed());
            }
            waited += 1;
            std::thread::sleep(Duration::from_micros(if waited < 100 { 20 } else { 1000 }));
        };
        let g = self.io[start]
            .lock()
            .map_err(|_| Error::invalid("NVMe queue lock poisoned"))?;
        if g.is_none() && self.checked_out[start].load(Ordering::Acquire) {
            drop(g);
            return self.queue();
        }
        match g.as_ref() {
            None => Err(closed()),
            Some(q) if q.broken => Err(Error::new(
                ErrorCode::Io,
                format!("NVMe I/O queue {} is unusable after a timeout", q.qp.qid),
            )),
            Some(_) => Ok(QueueGuard(g)),
        }
    }

    /// Take a free, usable I/O queue out of the pool without waiting (for a command submitted
    /// and completed on the caller's thread); give it back with [`Controller::put_queue`].
    pub(crate) fn take_queue(&self) -> Option<(usize, IoQueue)> {
        let n = self.io.len();
        // Reserve a checkout, leaving at least one queue to the pool; then check `closed` (close
        // sets it before waiting for `taken` to drop to zero: one of the two sees the other).
        if self
            .taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t + 1 < n).then_some(t + 1)
            })
            .is_err()
        {
            return None;
        }
        if self.closed.load(Ordering::SeqCst) {
            self.taken.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let start = self.next_queue.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let j = (start + i) % n;
            if let Ok(mut g) = self.io[j].try_lock() {
                if g.as_ref().is_some_and(|q| !q.broken) {
                    self.checked_out[j].store(true, Ordering::Release);
                    return g.take().map(|q| (j, q));
                }
            }
        }
        self.taken.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Return a queue from [`Controller::take_queue`] ([`Controller::close`] waits for it).
    pub(crate) fn put_queue(&self, idx: usize, q: IoQueue) {
        if let Ok(mut g) = self.io[idx].lock() {
            *g = Some(q);
        }
        self.checked_out[idx].store(false, Ordering::Release);
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }

    /// Register-level shutdown: CC.SHN = normal, wait for SHST complete, then disable.
    fn shutdown_registers(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let cc = self.bar.read32(CC);
        if cc & CC_EN != 0 {
            self.bar.write32(CC, (cc & !CC_SHN_MASK) | CC_SHN_NORMAL);
            let _ = wait_csts(
                &self.bar,
                CSTS_SHST_MASK,
                CSTS_SHST_COMPLETE,
                self.cap.timeout_ms.min(10_000),
                "shutting down",
            );
            self.bar.write32(CC, CC_BASE);
            let _ = wait_csts(&self.bar, CSTS_RDY, 0, self.cap.timeout_ms, "disabling");
        }
    }

    /// Delete the I/O queues, shut the controller down (CC.SHN) and disable it. Waits for
    /// requests in flight; later calls fail with "closed". Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut result = Ok(());
        // Queues taken out for requests submitted on a caller's thread come back once those
        // complete (or time out): wait, so their queues are deleted and no one is still polling
        // the registers when the BAR is unmapped.
        let t0 = Instant::now();
        while self.taken.load(Ordering::SeqCst) > 0
            && t0.elapsed() < crate::queue::COMMAND_TIMEOUT + Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut guards: Vec<_> = self.io.iter().filter_map(|q| q.lock().ok()).collect();
        for g in guards.iter().rev() {
            let Some(g) = g.as_ref() else { continue };
            if g.broken {
                continue;
            }
            let qid = g.qp.qid as u32;
            if let Err(e) = self
                .admin_cmd(Sqe::new(ADM_DELETE_SQ, 0).cdw(10, qid), None, "Delete SQ")
                .and_then(|_| {
                    self.admin_cmd(Sqe::new(ADM_DELETE_CQ, 0).cdw(10, qid), None, "Delete CQ")
                })
            {
                result = Err(e);
                break;
            }
        }
        let cc = self.bar.read32(CC);
        if cc & CC_EN != 0 {
            self.bar.write32(CC, (cc & !CC_SHN_MASK) | CC_SHN_NORMAL);
            if let Err(e) = wait_csts(
                &self.bar,
                CSTS_SHST_MASK,
                CSTS_SHST_COMPLETE,
                self.cap.timeout_ms.min(10_000),
                "shutting down",
            ) {
                result = result.and(Err(e));
            }
            self.bar.write32(CC, CC_BASE);
            if let Err(e) = wait_csts(&self.bar, CSTS_RDY, 0, self.cap.timeout_ms, "disabling") {
                result = result.and(Err(e));
            }
        }
        // Release everything that keeps the VFIO device open (DMA buffers, the BAR mapping, the
        // fds), so the controller can be opened again while namespaces still reference `self`.
        for g in guards.iter_mut() {
            g.take();
        }
        drop(guards);
        if let Ok(mut a) = self.admin.lock() {
            a.take();
        }
        self.bar.unmap();
        if let Some(dev) = self.dev.lock().ok().and_then(|mut d| d.take()) {
            dev.clear_msix();
        }
        result
    }
}

/// A locked, open I/O queue.
pub(crate) struct QueueGuard<'a>(MutexGuard<'a, Option<IoQueue>>);

impl std::ops::Deref for QueueGuard<'_> {
    type Target = IoQueue;
    fn deref(&self) -> &IoQueue {
        self.0.as_ref().expect("checked when the guard was made")
    }
}

impl std::ops::DerefMut for QueueGuard<'_> {
    fn deref_mut(&mut self) -> &mut IoQueue {
        self.0.as_mut().expect("checked when the guard was made")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
