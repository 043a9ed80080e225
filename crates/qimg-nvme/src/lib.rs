//! qimg's userspace NVMe driver over vfio-pci, in layers:
//!
//! - [`vfio`]: container, IOMMU group and device fds; region info, MSI-X eventfds, DMA mapping.
//! - [`dma`]: page-aligned buffers mapped for the device at IOVAs the IOMMU accepts.
//! - [`pci`]: config space (bus mastering) and BAR0 mapped for 32-bit register access.
//! - [`regs`]: the controller registers; [`queue`]: submission/completion queue pairs.
//! - [`controller`]: reset/enable, admin commands, Identify, queue creation, shutdown.
//! - [`identify`]: the Identify Controller / Namespace structures.
//! - [`io`]: read, write, flush, write zeroes, deallocate on a namespace.
//! - [`bench`]: qemu-img bench's loop run natively on one queue.
//! - [`fast`]: a lone request submitted and polled on the caller's thread.
//! - [`storage`]: the `nvme` protocol node (a `qimg_core::Storage` over a namespace).
pub mod bench;
pub mod controller;
pub mod dma;
pub mod err;
pub mod fast;
pub mod identify;
pub mod io;
pub mod pci;
pub mod queue;
pub mod regs;
pub mod storage;
pub mod vfio;

pub use controller::Controller;
pub use io::Namespace;
pub use storage::NvmeStorage;
