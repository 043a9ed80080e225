//! Host-side tests of the parts of the NVMe driver that need no device: register and Identify
//! decoding, PCI address checks, the IOVA allocator, and status errors. The device paths run in
//! the guest (test/nvme/*.test.ts).
use qimg_core::ErrorCode;
use qimg_nvme::controller::check_bdf;
use qimg_nvme::dma::IovaAllocator;
use qimg_nvme::identify::{ControllerInfo, NamespaceInfo};
use qimg_nvme::regs::Cap;
use qimg_nvme::vfio::IovaRange;

#[test]
fn cap_fields() {
    // QEMU's emulated controller: MQES 0x7ff, CQR, TO 0x0f, DSTRD 0, NVM CSS, MPSMIN 0, MPSMAX 4.
    let v: u64 = 0x7ff | (1 << 16) | (0x0f << 24) | (1 << 37) | (4 << 52);
    let c = Cap::parse(v);
    assert_eq!(c.mqes, 0x800);
    assert_eq!(c.timeout_ms, 7500);
    assert_eq!(c.dstrd, 4);
    assert_eq!(c.mps_min, 4096);
    assert!(c.css_nvm);
    assert_eq!(c.sq_doorbell(0), 0x1000);
    assert_eq!(c.cq_doorbell(0), 0x1004);
    assert_eq!(c.sq_doorbell(2), 0x1010);
    let c = Cap::parse(v | (2 << 32));
    assert_eq!(c.dstrd, 16);
    assert_eq!(c.cq_doorbell(1), 0x1000 + 3 * 16);
}

#[test]
fn identify_controller_fields() {
    let mut b = vec![0u8; 4096];
    b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
    b[4..24].copy_from_slice(b"deadbeef0           ");
    b[24..64].copy_from_slice(format!("{:<40}", "QEMU NVMe Ctrl").as_bytes());
    b[64..72].copy_from_slice(b"10.0.2  ");
    b[77] = 7;
    b[516..520].copy_from_slice(&256u32.to_le_bytes());
    b[520..522].copy_from_slice(&0x0cu16.to_le_bytes());
    let i = ControllerInfo::parse(&b);
    assert_eq!(i.vid, 0x1b36);
    assert_eq!(i.serial, "deadbeef0");
    assert_eq!(i.model, "QEMU NVMe Ctrl");
    assert_eq!(i.firmware, "10.0.2");
    assert_eq!(i.mdts, 7);
    assert_eq!(i.nn, 256);
    assert!(i.supports_dsm() && i.supports_write_zeroes());
}

#[test]
fn identify_namespace_bounds() {
    let mut b = vec![0u8; 4096];
    assert_eq!(
        NamespaceInfo::parse(1, &b).unwrap_err().code,
        ErrorCode::NotFound
    );
    b[0..8].copy_from_slice(&131072u64.to_le_bytes());
    b[25] = 1; // two formats
    b[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
    b[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
    let n = NamespaceInfo::parse(1, &b).unwrap();
    assert_eq!((n.lba_size, n.size_bytes()), (512, 64 << 20));
    b[26] = 1;
    assert_eq!(NamespaceInfo::parse(1, &b).unwrap().lba_size, 4096);
    b[26] = 5; // beyond NLBAF
    assert_eq!(
        NamespaceInfo::parse(1, &b).unwrap_err().code,
        ErrorCode::Corrupt
    );
    b[26] = 0;
    b[128..132].copy_from_slice(&(30u32 << 16).to_le_bytes());
    assert_eq!(
        NamespaceInfo::parse(1, &b).unwrap_err().code,
        ErrorCode::Unsupported
    );
    b[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
    b[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        NamespaceInfo::parse(1, &b).unwrap_err().code,
        ErrorCode::Corrupt
    );
}

#[test]
fn pci_addresses() {
    assert!(check_bdf("0000:00:10.0").is_ok());
    assert!(check_bdf("0000:06:0d.7").is_ok());
    for bad in [
        "00:10.0",
        "0000:00:10.8",
        "0000:00:10",
        "../../../etc",
        "0000:0g:10.0",
        "",
    ] {
        assert_eq!(
            check_bdf(bad).unwrap_err().code,
            ErrorCode::InvalidArgument,
            "{bad}"
        );
    }
}

#[test]
fn iova_allocator_avoids_msi_window_and_respects_ranges() {
    let mut a = IovaAllocator::new(Vec::new());
    let mut last = 0;
    for _ in 0..5000 {
        let i = a.alloc(1 << 20).unwrap();
        assert!(i >= last && i.is_multiple_of(4096));
        assert!(i + (1 << 20) <= 0xfee0_0000 || i > 0xfeef_ffff, "{i:#x}");
        last = i + (1 << 20);
    }
    let mut a = IovaAllocator::new(vec![
        IovaRange {
            start: 0,
            end: 0x3f_ffff,
        },
        IovaRange {
            start: 0x100_0000,
            end: 0x1ff_ffff,
        },
    ]);
    assert_eq!(a.alloc(0x20_0000).unwrap(), 0x10_0000);
    assert_eq!(a.alloc(0x20_0000).unwrap(), 0x100_0000);
    assert!(a.alloc(0x100_0000).is_err());
}

#[test]
fn status_errors_carry_sct_and_sc() {
    let e = qimg_nvme::err::status_err("Read", 0, 0x80);
    assert_eq!(e.code, ErrorCode::OutOfRange);
    assert_eq!(e.nvme_status, Some((0, 0x80)));
    assert!(e.message.contains("LBA Out of Range"));
    let e = qimg_nvme::err::status_err("Write", 2, 0x80);
    assert_eq!((e.code, e.nvme_status), (ErrorCode::Io, Some((2, 0x80))));
}

#[test]
fn iova_aligned_allocations() {
    // Huge-page buffers: 2 MiB-aligned device addresses, mixed with page-aligned ones, never
    // overlapping and never inside the MSI window.
    let mut a = IovaAllocator::new(Vec::new());
    let mut last = 0u64;
    for k in 0..3000u64 {
        let (len, align) = if k % 3 == 0 {
            (4 << 20, 2 << 20)
        } else {
            (12288, 4096)
        };
        let i = a.alloc_aligned(len, align).unwrap();
        assert!(i >= last && i.is_multiple_of(align), "{i:#x}");
        assert!(i + len <= 0xfee0_0000 || i > 0xfeef_ffff, "{i:#x}");
        last = i + len;
    }
    // A window too small for an aligned request after alignment: the next window serves it.
    let mut a = IovaAllocator::new(vec![
        IovaRange {
            start: 0x1000,
            end: 0x2f_ffff,
        },
        IovaRange {
            start: 0x100_0000,
            end: 0x1ff_ffff,
        },
    ]);
    assert_eq!(a.alloc_aligned(2 << 20, 2 << 20).unwrap(), 0x100_0000);
}

#[test]
fn bench_offsets_wrap_as_qemu_img() {
    use qimg_nvme::bench::next_offset;
    // Advance by the step; wrap modulo size - buffer size; a buffer as large as the device
    // always reads at 0.
    assert_eq!(next_offset(0, 4096, 4096, 1 << 20), 4096);
    assert_eq!(next_offset((1 << 20) - 8192, 4096, 4096, 1 << 20), 0);
    assert_eq!(next_offset(7 << 20, 512 << 10, 512 << 10, 8 << 20), 0);
    assert_eq!(next_offset(123, 4096, 1 << 20, 1 << 20), 0);
}
