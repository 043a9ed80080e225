//! PCI layer: config space access (bus mastering) and BAR0 mapped for 32-bit MMIO register access.
use crate::err::{os_err, Error, Result};
use crate::vfio::{
    RegionInfo, VfioDevice, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP,
};
use std::os::fd::AsRawFd;

/// PCI config space: the 16-bit Command register at 0x04 (bit 1 memory space, bit 2 bus master,
/// bit 10 INTx disable).
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;
const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Class code (base 0x01 storage, sub 0x08 NVM, prog-if 0x02 NVMe) at 0x09..0x0c.
const PCI_CLASS_PROG: u64 = 0x09;

/// BAR0 mapped into this process.
#[derive(Debug)]
pub struct Bar0 {
    ptr: std::sync::atomic::AtomicPtr<u8>,
    len: usize,
}

// SAFETY: the mapping is plain device memory accessed with volatile 32-bit loads/stores; the
// pointer stays valid until Drop and carries no thread affinity.
unsafe impl Send for Bar0 {}
// SAFETY: as above; concurrent volatile accesses to distinct registers are what hardware expects,
// and callers serialise accesses to the same register (controller lock or per-queue locks).
unsafe impl Sync for Bar0 {}

impl Bar0 {
    /// Map BAR0 of `dev` (at most `max_len` bytes; the registers and doorbells come first).
    pub fn map(dev: &VfioDevice) -> Result<Self> {
        let r: RegionInfo = dev.region(VFIO_PCI_BAR0_REGION_INDEX)?;
        if r.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 || r.size < 0x1000 {
            return Err(Error::unsupported("BAR0 cannot be mapped"));
        }
        // Map the whole BAR if the kernel lets us (MSI-X table mappable), else the first 8 KiB
        // (controller registers at 0x0, doorbells from 0x1000).
        for len in [r.size as usize, (r.size as usize).min(0x2000)] {
            // SAFETY: a fresh shared mapping of the device fd at the BAR's region offset; no
            // existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    dev.device.as_raw_fd(),
                    r.offset as libc::off_t,
                )
            };
            if p != libc::MAP_FAILED {
                return Ok(Bar0 {
                    ptr: std::sync::atomic::AtomicPtr::new(p.cast()),
                    len,
                });
            }
        }
        Err(os_err("Could not map BAR0"))
    }

    fn reg(&self, off: usize) -> *mut u32 {
        let p = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        assert!(!p.is_null(), "BAR0 used after the controller was closed");
        assert!(
            off + 4 <= self.len && off.is_multiple_of(4),
            "BAR0 offset {off:#x}"
        );
        // SAFETY: `off + 4 <= len` (checked), so the result stays inside the mapping.
        unsafe { p.add(off).cast::<u32>() }
    }

    /// Read the 32-bit register at `off`.
    pub fn read32(&self, off: usize) -> u32 {
        // SAFETY: `reg` returns an in-bounds, 4-aligned pointer into the live device mapping.
        unsafe { std::ptr::read_volatile(self.reg(off)) }
    }

    /// Write the 32-bit register at `off`.
    pub fn write32(&self, off: usize, v: u32) {
        // SAFETY: `reg` returns an in-bounds, 4-aligned pointer into the live device mapping.
        unsafe { std::ptr::write_volatile(self.reg(off), v) }
    }

    /// Unmap the BAR now (the device fd can only be released once nothing maps it). Later
    /// register accesses panic; the controller gates them behind its closed flag.
    pub fn unmap(&self) {
        let p = self
            .ptr
            .swap(std::ptr::null_mut(), std::sync::atomic::Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: unmapping exactly the mapping created in `map`, once (the swap above).
            unsafe { libc::munmap(p.cast(), self.len) };
        }
    }

    /// Read a 64-bit register as two 32-bit accesses (low dword first).
    pub fn read64(&self, off: usize) -> u64 {
        self.read32(off) as u64 | ((self.read32(off + 4) as u64) << 32)
    }

    /// Write a 64-bit register as two 32-bit accesses (low dword first).
    pub fn write64(&self, off: usize, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (a mapped BAR has at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Bar0 {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// Check the device is an NVMe controller and enable memory decoding and bus mastering (DMA),
/// with legacy INTx disabled.
pub fn enable_bus_master(dev: &VfioDevice) -> Result<()> {
    let cfg = dev.region(VFIO_PCI_CONFIG_REGION_INDEX)?;
    let mut class = [0u8; 3];
    dev.region_read(&cfg, &mut class, PCI_CLASS_PROG)?;
    if class != [0x02, 0x08, 0x01] {
        return Err(Error::invalid(format!(
            "PCI device is not an NVMe controller (class {:02x}{:02x}{:02x})",
            class[2], class[1], class[0]
        )));
    }
    let mut b = [0u8; 2];
    dev.region_read(&cfg, &mut b, PCI_COMMAND)?;
    let cmd =
        u16::from_le_bytes(b) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;
    dev.region_write(&cfg, &cmd.to_le_bytes(), PCI_COMMAND)
}
