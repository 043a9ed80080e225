//! Submission/completion queue pairs: entry layouts, doorbells, phase-bit polling with an MSI-X
//! eventfd to sleep on.
//!
//! Submission queue entry (64 bytes, NVMe Base 2.0 §4.2):
//! ```text
//! DW0   opcode 7:0 · FUSE 9:8 · PSDT 15:14 (0 = PRPs) · CID 31:16
//! DW1   NSID
//! DW2-3 reserved / command specific
//! DW4-5 MPTR (metadata pointer)
//! DW6-7 PRP entry 1
//! DW8-9 PRP entry 2 (or pointer to a PRP list)
//! DW10-15 command specific
//! ```
//! Completion queue entry (16 bytes, §4.6):
//! ```text
//! DW0   command specific result
//! DW1   reserved
//! DW2   SQ head pointer 15:0 · SQ identifier 31:16
//! DW3   CID 15:0 · P (phase) 16 · SC 24:17 · SCT 27:25 · CRD 29:28 · M 30 · DNR 31
//! ```
use crate::dma::DmaBuffer;
use crate::err::{os_err, Error, ErrorCode, Result};
use crate::pci::Bar0;
use crate::regs::{Cap, CSTS, CSTS_CFS, CSTS_RDY};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of a submission queue entry.
pub const SQE_SIZE: usize = 64;
/// Size of a completion queue entry.
pub const CQE_SIZE: usize = 16;

/// A submission queue entry as 16 dwords (layout above).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sqe(pub [u32; 16]);

impl Sqe {
    /// A command with `opcode` for namespace `nsid` (CID filled in on submission).
    pub fn new(opcode: u8, nsid: u32) -> Self {
        let mut d = [0u32; 16];
        d[0] = opcode as u32;
        d[1] = nsid;
        Sqe(d)
    }
    /// Set PRP1 and PRP2.
    pub fn prps(mut self, prp1: u64, prp2: u64) -> Self {
        self.0[6] = prp1 as u32;
        self.0[7] = (prp1 >> 32) as u32;
        self.0[8] = prp2 as u32;
        self.0[9] = (prp2 >> 32) as u32;
        self
    }
    /// Set command dword `n` (10..=15).
    pub fn cdw(mut self, n: usize, v: u32) -> Self {
        self.0[n] = v;
        self
    }
}

/// A completion, decoded.
#[derive(Debug, Clone, Copy)]
pub struct Cqe {
    /// DW0 (command specific).
    pub result: u32,
    /// Command identifier.
    pub cid: u16,
    /// Status code type.
    pub sct: u8,
    /// Status code.
    pub sc: u8,
}

impl Cqe {
    /// True for a successful completion.
    pub fn ok(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
    /// Err with the status unless successful.
    pub fn check(&self, what: &str) -> Result<u32> {
        if self.ok() {
            Ok(self.result)
        } else {
            Err(crate::err::status_err(what, self.sct, self.sc))
        }
    }
}

/// A new non-blocking eventfd for an MSI-X vector.
pub fn new_eventfd() -> Result<Arc<OwnedFd>> {
    // SAFETY: eventfd has no memory preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(os_err("eventfd"));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// How long any single command may take before the controller counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`spin_budget`]: most single commands complete within it (in the emulated test
/// guest, polling instead of sleeping on the interrupt more than doubled queue-depth-1 rates).
const DEFAULT_SPIN_US: u64 = 200;

/// How long [`QueuePair::wait`] polls the phase bit (yielding the CPU between polls) before it
/// sleeps on the MSI-X eventfd, and how long a lone request polls on the caller's thread
/// (`crate::fast`): `QIMG_NVME_SPIN_US` microseconds (default 200; 0: 64 spins only, and no
/// polling on the caller's thread).
pub fn spin_budget() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var("QIMG_NVME_SPIN_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_micros(DEFAULT_SPIN_US), |us| {
                Duration::from_micros(us.min(100_000))
            })
    })
}

/// Threads in [`QueuePair::wait`] right now (any controller).
static WAITERS: AtomicUsize = AtomicUsize::new(0);

/// Counts this thread in [`WAITERS`] while alive.
struct Waiting;

impl Waiting {
    fn enter() -> Self {
        WAITERS.fetch_add(1, Ordering::Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One SQ/CQ pair with its doorbells and an eventfd its MSI-X vector signals.
#[derive(Debug)]
pub struct QueuePair {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    /// Entries in each queue.
    pub depth: u16,
    /// The submission queue memory.
    pub sq: DmaBuffer,
    /// The completion queue memory.
    pub cq: DmaBuffer,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    sq_db: usize,
    cq_db: usize,
    irq: Arc<OwnedFd>,
    /// Commands submitted and not yet completed.
    pub outstanding: usize,
}

impl QueuePair {
    /// A pair of `depth` entries each (memory zeroed, so every phase bit starts at 0), woken by
    /// `irq` (the eventfd of its MSI-X vector).
    pub fn new(
        qid: u16,
        depth: u16,
        sq: DmaBuffer,
        cq: DmaBuffer,
        cap: &Cap,
        irq: Arc<OwnedFd>,
    ) -> Self {
        assert!(sq.len() >= depth as usize * SQE_SIZE && cq.len() >= depth as usize * CQE_SIZE);
        QueuePair {
            qid,
            depth,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            sq_db: cap.sq_doorbell(qid),
            cq_db: cap.cq_doorbell(qid),
            irq,
            outstanding: 0,
        }
    }

    /// Room for another command (one SQ slot always stays empty).
    pub fn has_room(&self) -> bool {
        self.outstanding + 1 < self.depth as usize
    }

    /// Put `sqe` with command id `cid` in the queue and ring the tail doorbell.
    pub fn submit(&mut self, bar: &Bar0, mut sqe: Sqe, cid: u16) {
        assert!(self.has_room());
        sqe.0[0] = (sqe.0[0] & 0xffff) | ((cid as u32) << 16);
        let base = self.sq.as_ptr();
        let slot = self.sq_tail as usize * SQE_SIZE;
        for (i, dw) in sqe.0.iter().enumerate() {
            // SAFETY: slot + 4i is within the SQ buffer (checked in new) and 4-aligned.
            unsafe { std::ptr::write_volatile(base.add(slot + 4 * i).cast::<u32>(), *dw) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.sq_tail = (self.sq_tail + 1) % self.depth;
        self.outstanding += 1;
        bar.write32(self.sq_db, self.sq_tail as u32);
    }

    /// Take the next completion if the controller has posted one.
    pub fn poll(&mut self, bar: &Bar0) -> Option<Cqe> {
        let base = self.cq.as_ptr();
        let slot = self.cq_head as usize * CQE_SIZE;
        // SAFETY: slot + 12 is within the CQ buffer (checked in new) and 4-aligned.
        let dw3 = unsafe { std::ptr::read_volatile(base.add(slot + 12).cast::<u32>()) };
        if ((dw3 >> 16) & 1 == 1) != self.phase {
            return None;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: as above, DW0 of the same entry.
        let dw0 = unsafe { std::ptr::read_volatile(base.add(slot).cast::<u32>()) };
        self.cq_head += 1;
        if self.cq_head == self.depth {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        bar.write32(self.cq_db, self.cq_head as u32);
        Some(Cqe {
            result: dw0,
            cid: dw3 as u16,
            sc: ((dw3 >> 17) & 0xff) as u8,
            sct: ((dw3 >> 25) & 0x7) as u8,
        })
    }

    /// Wait for the next completion: spin briefly on the phase bit, then sleep on the eventfd
    /// (with a short timeout, so a lost interrupt only costs a millisecond). Fails after
    /// [`COMMAND_TIMEOUT`], when the controller reports a fatal status, or when it is no longer
    /// ready (reset underneath: a function-level reset, or another agent clearing CC.EN).
    pub fn wait(&mut self, bar: &Bar0) -> Result<Cqe> {
        let start = Instant::now();
        let _waiting = Waiting::enter();
        let budget = spin_budget();
        let mut spins = 0u32;
        loop {
            if let Some(c) = self.poll(bar) {
                return Ok(c);
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            // Poll only as the process's sole waiter: several threads polling at once would
            // take the CPU from each other (and from the submitters).
            if !budget.is_zero() && start.elapsed() < budget && WAITERS.load(Ordering::Relaxed) == 1
            {
                std::thread::yield_now();
                spins = 64;
                continue;
            }
            let mut pfd = libc::pollfd {
                fd: self.irq.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 1) };
            let mut v = 0u64;
            // SAFETY: reading 8 bytes into a u64 from a non-blocking eventfd.
            unsafe { libc::read(self.irq.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            if spins.is_multiple_of(64) {
                let csts = bar.read32(CSTS);
                if csts != u32::MAX && csts & CSTS_RDY == 0 {
                    return Err(Error::new(
                        ErrorCode::Io,
                        format!(
                            "NVMe controller was reset underneath qimg (CSTS.RDY=0) with commands \
                             in flight on queue {}; close and reopen it",
                            self.qid
                        ),
                    ));
                }
                if csts == u32::MAX || csts & CSTS_CFS != 0 {
                    return Err(Error::new(
                        ErrorCode::Io,
                        format!(
                            "NVMe controller fatal status (CSTS {csts:#x}) on queue {}",
                            self.qid
                        ),
                    ));
                }
                if start.elapsed() > COMMAND_TIMEOUT {
                    return Err(Error::new(
                        ErrorCode::Io,
                        format!("NVMe command timed out on queue {}", self.qid),
                    ));
                }
            }
        }
    }
}
