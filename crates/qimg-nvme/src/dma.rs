//! DMA memory: page-aligned anonymous mappings pinned and mapped into the device's IOMMU at an
//! IOVA from a simple bump allocator that respects the IOMMU's usable ranges.
use crate::err::{os_err, Error, Result};
use crate::vfio::{IovaRange, VfioDevice};
use std::sync::{Arc, Mutex, Weak};

/// Page size used for queues, PRPs and buffers (CC.MPS = 0 → 4 KiB).
pub const PAGE: usize = 4096;

/// Hands out IOVAs: below 2^39 (what emulated IOMMUs accept), outside the MSI window
/// 0xfee00000–0xfeefffff, and inside the ranges VFIO reported.
#[derive(Debug)]
pub struct IovaAllocator {
    next: u64,
    ranges: Vec<IovaRange>,
}

const MSI_START: u64 = 0xfee0_0000;
const MSI_END: u64 = 0xfeef_ffff;
const IOVA_LIMIT: u64 = 1 << 39;

impl IovaAllocator {
    /// A new allocator over `ranges` (everything below 2^39 when empty).
    pub fn new(ranges: Vec<IovaRange>) -> Self {
        IovaAllocator {
            next: 0x10_0000,
            ranges,
        }
    }

    /// Usable windows: the reported ranges (or everything) cut at 2^39 and around the MSI
    /// window, sorted by start.
    fn windows(&self) -> Vec<(u64, u64)> {
        let base = if self.ranges.is_empty() {
            vec![(0, IOVA_LIMIT - 1)]
        } else {
            self.ranges.iter().map(|r| (r.start, r.end)).collect()
        };
        let mut out = Vec::new();
        for (s, e) in base {
            let e = e.min(IOVA_LIMIT - 1);
            if s > e {
                continue;
            }
            if s <= MSI_END && e >= MSI_START {
                if s < MSI_START {
                    out.push((s, MSI_START - 1));
                }
                if e > MSI_END {
                    out.push((MSI_END + 1, e));
                }
            } else {
                out.push((s, e));
            }
        }
        out.sort_unstable();
        out
    }

    /// Reserve `len` bytes (a multiple of PAGE), at increasing addresses.
    pub fn alloc(&mut self, len: u64) -> Result<u64> {
        self.alloc_aligned(len, PAGE as u64)
    }

    /// Reserve `len` bytes starting at a multiple of `align` (a power of two, at least PAGE).
    pub fn alloc_aligned(&mut self, len: u64, align: u64) -> Result<u64> {
        for (s, e) in self.windows() {
            let start = self.next.max(s).next_multiple_of(align);
            if start.checked_add(len - 1).is_some_and(|last| last <= e) {
                self.next = start + len;
                return Ok(start);
            }
        }
        Err(Error::new(
            qimg_core::ErrorCode::Io,
            "NVMe: out of IOVA space for DMA buffers",
        ))
    }
}

/// Huge page size (x86-64 PMD): buffers this large or larger are aligned to it.
const HUGE: usize = 2 << 20;

/// Whether large buffers use 2 MiB-aligned huge pages: yes unless `QIMG_NVME_HUGE=0`.
fn huge_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("QIMG_NVME_HUGE").map_or(true, |v| v != "0"))
}

/// `len` bytes of fresh, populated anonymous memory.
fn map_small(len: usize) -> Result<*mut libc::c_void> {
    // SAFETY: a fresh private anonymous mapping; affects no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("Could not allocate DMA memory"));
    }
    Ok(p)
}

/// `len` bytes (a multiple of [`HUGE`]) of anonymous memory at a 2 MiB-aligned address, advised
/// to use transparent huge pages, then populated.
fn map_huge(len: usize) -> Result<*mut libc::c_void> {
    let over = len + HUGE;
    // SAFETY: a fresh private anonymous mapping (not populated yet); affects no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("Could not allocate DMA memory"));
    }
    let start = p as usize;
    let aligned = start.next_multiple_of(HUGE);
    let head = aligned - start;
    let tail = over - head - len;
    // SAFETY: trimming the parts of the mapping just made that lie outside [aligned, +len);
    // advising and touching only that range, which this function owns.
    unsafe {
        if head > 0 {
            libc::munmap(p, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        std::ptr::write_bytes(aligned as *mut u8, 0, len);
    }
    Ok(aligned as *mut libc::c_void)
}

/// One DMA-mapped, zero-initialised buffer. Unmapped from the IOMMU and freed on drop.
#[derive(Debug)]
pub struct DmaBuffer {
    ptr: *mut u8,
    len: usize,
    iova: u64,
    /// Weak: a buffer handed to JavaScript may outlive the controller; once the container is
    /// closed its IOMMU mappings are gone and only the memory is left to free.
    dev: Weak<VfioDevice>,
}

// SAFETY: the buffer is plain anonymous memory owned by this value; sharing rules are those of
// the queue structures that own it (accesses go through &self/&mut self or the device).
unsafe impl Send for DmaBuffer {}
// SAFETY: see Send; concurrent access is serialised by the owners (per-queue mutexes).
unsafe impl Sync for DmaBuffer {}

impl DmaBuffer {
    /// Allocate `len` bytes (rounded up to pages) and map them for the device. From 2 MiB up, the
    /// memory and its IOVA are 2 MiB aligned and the memory asks for transparent huge pages, so
    /// the IOMMU can map it with 2 MiB superpages: fewer page-table walks per transfer (an
    /// emulated IOMMU translates every DMA access).
    pub fn new(dev: &Arc<VfioDevice>, iovas: &Mutex<IovaAllocator>, len: usize) -> Result<Self> {
        let huge = len >= HUGE && huge_enabled();
        let len = if huge {
            len.next_multiple_of(HUGE)
        } else {
            len.max(PAGE).next_multiple_of(PAGE)
        };
        let p = if huge {
            map_huge(len)?
        } else {
            map_small(len)?
        };
        let align = if huge { HUGE } else { PAGE } as u64;
        let iova = match iovas
            .lock()
            .map_err(|_| Error::invalid("IOVA allocator poisoned"))?
            .alloc_aligned(len as u64, align)
        {
            Ok(i) => i,
            Err(e) => {
                // SAFETY: unmapping the mapping created just above.
                unsafe { libc::munmap(p, len) };
                return Err(e);
            }
        };
        if let Err(e) = dev.map_dma(p as usize, iova, len) {
            // SAFETY: unmapping the mapping created just above.
            unsafe { libc::munmap(p, len) };
            return Err(e);
        }
        Ok(DmaBuffer {
            ptr: p.cast(),
            len,
            iova,
            dev: Arc::downgrade(dev),
        })
    }

    /// The device-visible address of byte `off`.
    pub fn iova(&self, off: usize) -> u64 {
        debug_assert!(off <= self.len);
        self.iova + off as u64
    }

    /// The device-visible address of `len` bytes at `ptr` if they lie inside this buffer.
    pub fn iova_of(&self, ptr: *const u8, len: usize) -> Option<u64> {
        let start = self.ptr as usize;
        let p = ptr as usize;
        (p >= start && p.checked_add(len)? <= start + self.len)
            .then(|| self.iova + (p - start) as u64)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw pointer to the start (for volatile queue-entry access).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The bytes (the device may write them only while a command using them is outstanding, and
    /// the owner holds `&mut self` or the queue lock then).
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: in bounds; the memory lives as long as self; no command writes it while the
        // caller reads (commands complete before their buffers are read).
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.len);
        // SAFETY: in bounds; exclusive through &mut self; the device does not access the range
        // until a command referencing it is submitted.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.upgrade() {
            dev.unmap_dma(self.iova, self.len);
        }
        // SAFETY: unmapping exactly the mapping created in `new`, after the IOMMU mapping is gone.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
