//! The VFIO layer: a type1 IOMMU container, the device's IOMMU group, the device fd, and the
//! ioctls on them (region info, config space, MSI-X eventfds, DMA mapping).
//!
//! The kernel ABI (include/uapi/linux/vfio.h): every ioctl is `_IO(';', 100 + n)` and takes a
//! pointer to a struct that starts with `argsz`.
use crate::err::{os_err, Result};
use qimg_core::Error;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const VFIO_TYPE: u64 = b';' as u64;
const fn vfio_io(nr: u64) -> u64 {
    (VFIO_TYPE << 8) | (100 + nr)
}
const VFIO_GET_API_VERSION: u64 = vfio_io(0);
const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
const VFIO_SET_IOMMU: u64 = vfio_io(2);
const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: u64 = vfio_io(10);
const VFIO_IOMMU_GET_INFO: u64 = vfio_io(12);
const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);

const VFIO_API_VERSION: i32 = 0;
const VFIO_TYPE1V2_IOMMU: u64 = 3;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;
const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
const VFIO_DMA_MAP_FLAG_READ: u32 = 1;
const VFIO_DMA_MAP_FLAG_WRITE: u32 = 2;
const VFIO_IRQ_SET_DATA_NONE: u32 = 1;
const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 4;
const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 32;
/// Region flag: the region may be mmap'ed.
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 4;
/// Region index of BAR0.
pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
/// Region index of the PCI configuration space.
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
/// IRQ index of MSI-X.
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;

/// `struct vfio_group_status { __u32 argsz; __u32 flags; }`
#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// `struct vfio_region_info { __u32 argsz, flags, index, cap_offset; __u64 size, offset; }`
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct RegionInfo {
    argsz: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    index: u32,
    cap_offset: u32,
    /// Size of the region in bytes.
    pub size: u64,
    /// Offset of the region in the device fd (for pread/pwrite/mmap).
    pub offset: u64,
}

/// `struct vfio_irq_info { __u32 argsz, flags, index, count; }`
#[repr(C)]
#[derive(Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// `struct vfio_irq_set { __u32 argsz, flags, index, start, count; __u8 data[]; }` — here with
/// room for up to 64 eventfds (`__s32` each) as data.
#[repr(C)]
struct IrqSet {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fds: [i32; 64],
}

/// `struct vfio_iommu_type1_dma_map { __u32 argsz, flags; __u64 vaddr, iova, size; }`
#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap { __u32 argsz, flags; __u64 iova, size; }`
#[repr(C)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

/// `struct vfio_iommu_type1_info { __u32 argsz, flags; __u64 iova_pgsizes; __u32 cap_offset,
/// pad; }` followed by the capability chain (each `struct vfio_info_cap_header { __u16 id,
/// version; __u32 next; }`); the IOVA range capability is `{ header; __u32 nr_iovas, reserved;
/// struct { __u64 start, end; } iova_ranges[]; }`.
#[repr(C)]
struct IommuInfoHead {
    argsz: u32,
    flags: u32,
    iova_pgsizes: u64,
    cap_offset: u32,
    pad: u32,
}

/// One raw ioctl with a pointer argument.
///
/// # Safety
/// `arg` must point to a live value of the type the request `req` expects (or be 0 for requests
/// taking an integer), with `argsz` set where the ABI asks for it.
unsafe fn ioctl_ptr(fd: RawFd, req: u64, arg: usize) -> std::io::Result<i32> {
    // SAFETY: the caller guarantees `arg` matches what `req` expects on `fd`.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn open_rw(path: &str) -> Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| Error::invalid("path has a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string; open has no other preconditions.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_err(format!("Could not open '{path}'")));
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An IOVA range the IOMMU accepts (inclusive end).
#[derive(Debug, Clone, Copy)]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA.
    pub end: u64,
}

/// An opened VFIO device with its container and group (dropped in reverse order).
#[derive(Debug)]
pub struct VfioDevice {
    /// The device fd (regions, IRQs).
    pub device: OwnedFd,
    _group: OwnedFd,
    /// The container fd (IOMMU, DMA mappings).
    pub container: OwnedFd,
    /// Usable IOVA ranges reported by the IOMMU (empty when the kernel reports none).
    pub iova_ranges: Vec<IovaRange>,
}

impl VfioDevice {
    /// Open the PCI device `bdf` (`DDDD:BB:SS.F`), which must be bound to vfio-pci: its IOMMU
    /// group, a type1v2 container, and the device fd.
    pub fn open(bdf: &str) -> Result<Self> {
        let sys = format!("/sys/bus/pci/devices/{bdf}");
        if !std::path::Path::new(&sys).exists() {
            return Err(Error::new(
                qimg_core::ErrorCode::NotFound,
                format!("PCI device {bdf} does not exist"),
            ));
        }
        let driver = std::fs::read_link(format!("{sys}/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(Error::invalid(format!(
                "PCI device {bdf} is not bound to vfio-pci (driver: {})",
                driver.as_deref().unwrap_or("none")
            )));
        }
        let group_link = std::fs::read_link(format!("{sys}/iommu_group"))
            .map_err(|e| Error::io(format!("No IOMMU group for {bdf}"), &e))?;
        let group_no = group_link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::invalid(format!("No IOMMU group for {bdf}")))?;

        let container = open_rw("/dev/vfio/vfio")?;
        let cfd = container.as_raw_fd();
        // SAFETY: VFIO_GET_API_VERSION takes no argument.
        let v = unsafe { ioctl_ptr(cfd, VFIO_GET_API_VERSION, 0) }
            .map_err(|e| Error::io("VFIO_GET_API_VERSION", &e))?;
        if v != VFIO_API_VERSION {
            return Err(Error::unsupported(format!("Unknown VFIO API version {v}")));
        }
        // SAFETY: VFIO_CHECK_EXTENSION takes the extension number as an integer.
        let ok = unsafe { ioctl_ptr(cfd, VFIO_CHECK_EXTENSION, VFIO_TYPE1V2_IOMMU as usize) }
            .map_err(|e| Error::io("VFIO_CHECK_EXTENSION", &e))?;
        if ok == 0 {
            return Err(Error::unsupported("VFIO type1v2 IOMMU is not available"));
        }

        let group = open_rw(&format!("/dev/vfio/{group_no}")).map_err(|e| {
            if e.errno == Some(libc::EBUSY) {
                Error::new(
                    qimg_core::ErrorCode::Locked,
                    format!("PCI device {bdf} is in use by another process (VFIO group {group_no} busy)"),
                )
            } else {
                e
            }
        })?;
        let gfd = group.as_raw_fd();
        let mut st = GroupStatus {
            argsz: std::mem::size_of::<GroupStatus>() as u32,
            flags: 0,
        };
        // SAFETY: `st` is a live vfio_group_status with argsz set.
        unsafe { ioctl_ptr(gfd, VFIO_GROUP_GET_STATUS, &mut st as *mut _ as usize) }
            .map_err(|e| Error::io("VFIO_GROUP_GET_STATUS", &e))?;
        if st.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::invalid(format!(
                "VFIO group {group_no} is not viable: bind every device of the group to vfio-pci"
            )));
        }
        let cfd_val: i32 = cfd;
        // SAFETY: VFIO_GROUP_SET_CONTAINER takes a pointer to the container fd (an int).
        unsafe {
            ioctl_ptr(
                gfd,
                VFIO_GROUP_SET_CONTAINER,
                &cfd_val as *const i32 as usize,
            )
        }
        .map_err(|e| Error::io("VFIO_GROUP_SET_CONTAINER", &e))?;
        // SAFETY: VFIO_SET_IOMMU takes the IOMMU type as an integer.
        unsafe { ioctl_ptr(cfd, VFIO_SET_IOMMU, VFIO_TYPE1V2_IOMMU as usize) }
            .map_err(|e| Error::io("VFIO_SET_IOMMU", &e))?;
        let iova_ranges = iommu_iova_ranges(cfd);

        let name = CString::new(bdf).map_err(|_| Error::invalid("bad PCI address"))?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name.
        let dfd = unsafe { ioctl_ptr(gfd, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr() as usize) }
            .map_err(|e| Error::io(format!("Could not open VFIO device {bdf}"), &e))?;
        // SAFETY: `dfd` is a new fd returned by the kernel and owned by nobody else.
        let device = unsafe { OwnedFd::from_raw_fd(dfd) };
        Ok(VfioDevice {
            device,
            _group: group,
            container,
            iova_ranges,
        })
    }

    /// Information about region `index` (a BAR or the config space).
    pub fn region(&self, index: u32) -> Result<RegionInfo> {
        let mut ri = RegionInfo {
            argsz: std::mem::size_of::<RegionInfo>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `ri` is a live vfio_region_info with argsz and index set.
        unsafe {
            ioctl_ptr(
                self.device.as_raw_fd(),
                VFIO_DEVICE_GET_REGION_INFO,
                &mut ri as *mut _ as usize,
            )
        }
        .map_err(|e| Error::io("VFIO_DEVICE_GET_REGION_INFO", &e))?;
        Ok(ri)
    }

    /// How many vectors IRQ index `index` has.
    pub fn irq_count(&self, index: u32) -> Result<u32> {
        let mut ii = IrqInfo {
            argsz: std::mem::size_of::<IrqInfo>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `ii` is a live vfio_irq_info with argsz and index set.
        unsafe {
            ioctl_ptr(
                self.device.as_raw_fd(),
                VFIO_DEVICE_GET_IRQ_INFO,
                &mut ii as *mut _ as usize,
            )
        }
        .map_err(|e| Error::io("VFIO_DEVICE_GET_IRQ_INFO", &e))?;
        Ok(ii.count)
    }

    /// Route MSI-X vectors `0..fds.len()` to the given eventfds.
    pub fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<()> {
        if fds.len() > 64 {
            return Err(Error::invalid("too many MSI-X vectors"));
        }
        let mut set = IrqSet {
            argsz: (20 + 4 * fds.len()) as u32,
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: VFIO_PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: fds.len() as u32,
            fds: [-1; 64],
        };
        set.fds[..fds.len()].copy_from_slice(fds);
        // SAFETY: `set` is a live vfio_irq_set whose argsz covers exactly `count` eventfds.
        unsafe {
            ioctl_ptr(
                self.device.as_raw_fd(),
                VFIO_DEVICE_SET_IRQS,
                &set as *const _ as usize,
            )
        }
        .map_err(|e| Error::io("VFIO_DEVICE_SET_IRQS (MSI-X)", &e))?;
        Ok(())
    }

    /// Tear down every MSI-X vector.
    pub fn clear_msix(&self) {
        let set = IrqSet {
            argsz: 20,
            flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: VFIO_PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: 0,
            fds: [-1; 64],
        };
        // SAFETY: `set` is a live vfio_irq_set with no data (argsz covers the header only).
        let _ = unsafe {
            ioctl_ptr(
                self.device.as_raw_fd(),
                VFIO_DEVICE_SET_IRQS,
                &set as *const _ as usize,
            )
        };
    }

    /// Read `buf.len()` bytes of region `r` at `off`.
    pub fn region_read(&self, r: &RegionInfo, buf: &mut [u8], off: u64) -> Result<()> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::pread(
                self.device.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                (r.offset + off) as libc::off_t,
            )
        };
        if n != buf.len() as isize {
            return Err(os_err("VFIO region read"));
        }
        Ok(())
    }

    /// Write `buf` to region `r` at `off`.
    pub fn region_write(&self, r: &RegionInfo, buf: &[u8], off: u64) -> Result<()> {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe {
            libc::pwrite(
                self.device.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                (r.offset + off) as libc::off_t,
            )
        };
        if n != buf.len() as isize {
            return Err(os_err("VFIO region write"));
        }
        Ok(())
    }

    /// Map `size` bytes of process memory at `vaddr` to `iova` for device reads and writes.
    pub fn map_dma(&self, vaddr: usize, iova: u64, size: usize) -> Result<()> {
        let m = DmaMap {
            argsz: std::mem::size_of::<DmaMap>() as u32,
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: vaddr as u64,
            iova,
            size: size as u64,
        };
        // SAFETY: `m` is a live vfio_iommu_type1_dma_map with argsz set; the caller keeps the
        // memory mapped until `unmap_dma`.
        unsafe {
            ioctl_ptr(
                self.container.as_raw_fd(),
                VFIO_IOMMU_MAP_DMA,
                &m as *const _ as usize,
            )
        }
        .map_err(|e| Error::io("VFIO_IOMMU_MAP_DMA", &e))?;
        Ok(())
    }

    /// Remove the mapping at `iova`.
    pub fn unmap_dma(&self, iova: u64, size: usize) {
        let mut u = DmaUnmap {
            argsz: std::mem::size_of::<DmaUnmap>() as u32,
            flags: 0,
            iova,
            size: size as u64,
        };
        // SAFETY: `u` is a live vfio_iommu_type1_dma_unmap with argsz set.
        let _ = unsafe {
            ioctl_ptr(
                self.container.as_raw_fd(),
                VFIO_IOMMU_UNMAP_DMA,
                &mut u as *mut _ as usize,
            )
        };
    }
}

/// The IOVA ranges from VFIO_IOMMU_GET_INFO's capability chain (empty if not reported).
fn iommu_iova_ranges(cfd: RawFd) -> Vec<IovaRange> {
    // First call for the size, second with a buffer that large (bounded at 64 KiB).
    let mut head = IommuInfoHead {
        argsz: std::mem::size_of::<IommuInfoHead>() as u32,
        flags: 0,
        iova_pgsizes: 0,
        cap_offset: 0,
        pad: 0,
    };
    // SAFETY: `head` is a live vfio_iommu_type1_info with argsz set.
    if unsafe { ioctl_ptr(cfd, VFIO_IOMMU_GET_INFO, &mut head as *mut _ as usize) }.is_err() {
        return Vec::new();
    }
    let need = head.argsz as usize;
    if need <= std::mem::size_of::<IommuInfoHead>() || need > 65536 {
        return Vec::new();
    }
    let mut buf = vec![0u64; need.div_ceil(8)];
    buf[0] = need as u64; // argsz (low u32), flags 0
                          // SAFETY: `buf` is at least `need` bytes, 8-aligned, starting with argsz = need.
    if unsafe { ioctl_ptr(cfd, VFIO_IOMMU_GET_INFO, buf.as_mut_ptr() as usize) }.is_err() {
        return Vec::new();
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
    let u32at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let flags = u32at(4).unwrap_or(0);
    if flags & VFIO_IOMMU_INFO_CAPS == 0 {
        return Vec::new();
    }
    let mut off = u32at(16).unwrap_or(0) as usize;
    let mut out = Vec::new();
    let mut hops = 0;
    while off != 0 && off + 8 <= need && hops < 32 {
        hops += 1;
        let id = u32at(off).unwrap_or(0) as u16;
        let next = u32at(off + 4).unwrap_or(0) as usize;
        if id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
            let n = u32at(off + 8).unwrap_or(0) as usize;
            for i in 0..n.min(256) {
                let (Some(start), Some(end)) = (u64at(off + 16 + 16 * i), u64at(off + 24 + 16 * i))
                else {
                    break;
                };
                out.push(IovaRange { start, end });
            }
        }
        off = next;
    }
    out
}
