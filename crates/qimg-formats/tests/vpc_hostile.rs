//! Malformed VHD footers and dynamic headers, one per limit QEMU enforces (plus qimg's own: the
//! dynamic header checksum and the BAT inside the file): each is refused with a typed error and
//! QEMU's message, and qemu-img refuses the ones it checks too.
mod common;
use common::{assert_qemu_refuses, have_qemu, refused, run, serial, storage};
use qimg_core::ErrorCode;
use qimg_formats::{open_driver, OpenOptions};

type Patch = fn(&mut Vec<u8>);

fn sum(b: &[u8], field: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(x as u32))
}

/// Recompute both footer checksums (copy at 0 and trailing) and the dynamic header's.
fn reseal(b: &mut [u8]) {
    let n = b.len();
    for f in [0, n - 512] {
        let s = sum(&b[f..f + 512], 64);
        b[f + 64..f + 68].copy_from_slice(&s.to_be_bytes());
    }
    let s = sum(&b[512..1536], 36);
    b[512 + 36..512 + 40].copy_from_slice(&s.to_be_bytes());
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn hostile_headers_are_refused_with_typed_errors() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let p = dir.path().join("bad.vhd");
    let (bs, ps) = (base.to_str().unwrap(), p.to_str().unwrap());
    assert!(run("qemu-img", &["create", "-q", "-f", "vpc", bs, "8M"])
        .status
        .success());
    assert!(run("qemu-io", &["-f", "vpc", "-c", "write -P 1 0 4k", bs])
        .status
        .success());
    let orig = std::fs::read(bs).unwrap();
    // (what, patch before resealing, patch after, code, message, qemu-img refuses too)
    let none: Patch = |_| {};
    let cases: Vec<(&str, Patch, Patch, ErrorCode, &str, bool)> = vec![
        ("no cookie", |b| {
            b[0] = b'x';
            let n = b.len();
            b[n - 512] = b'x';
        }, none, ErrorCode::WrongFormat, "invalid VPC image", true),
        ("footer checksum", none, |b| b[100] ^= 1, ErrorCode::Corrupt, "Incorrect header checksum", true),
        ("dynamic cookie", |b| b[512] = b'x', none, ErrorCode::Corrupt, "Invalid dynamic VHD header (no cxsparse cookie)", true),
        ("block size not a power of two", |b| put32(b, 512 + 32, 3 << 20), none, ErrorCode::Corrupt, "Invalid block size 3145728", true),
        ("block size below a sector", |b| put32(b, 512 + 32, 256), none, ErrorCode::Corrupt, "Invalid block size 256", true),
        ("page table too small", |b| put32(b, 512 + 28, 2), none, ErrorCode::Corrupt, "Page table too small", true),
        ("too many table entries", |b| put32(b, 512 + 28, 0x4000_0001), none, ErrorCode::Corrupt, "Max Table Entries too large (1073741825)", true),
        ("too many blocks", |b| put32(b, 512 + 32, 512), none, ErrorCode::Corrupt, "Page table too small", true),
        ("larger than 2040 GiB", |b| {
            for f in [0, b.len() - 512] {
                b[f + 28..f + 32].copy_from_slice(b"win ");
                b[f + 48..f + 56].copy_from_slice(&(2041u64 << 30).to_be_bytes());
            }
        }, none, ErrorCode::OutOfRange, "File too large", true),
        ("block past the end", |b| put32(b, 1536, 0x10_0000), none, ErrorCode::Corrupt, "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.", true),
        ("table past the end", |b| {
            b[512 + 16..512 + 24].copy_from_slice(&(1u64 << 40).to_be_bytes());
        }, none, ErrorCode::Corrupt, "VHD block allocation table (offset 1099511627776, 5 entries) lies outside the image file", false),
        ("dynamic header checksum", none, |b| b[512 + 100] ^= 1, ErrorCode::Corrupt, "Incorrect dynamic header checksum", false),
        ("differencing", |b| {
            for f in [0, b.len() - 512] {
                b[f + 60..f + 64].copy_from_slice(&4u32.to_be_bytes());
            }
        }, none, ErrorCode::Unsupported, "Differencing VHD images (with a parent disk) are not supported", false),
    ];
    assert!(cases.len() >= 8);
    for (what, before, after, code, msg, qemu_refuses) in cases {
        let mut b = orig.clone();
        before(&mut b);
        reseal(&mut b);
        after(&mut b);
        std::fs::write(&p, &b).unwrap();
        let e = refused("vpc", ps, what);
        assert_eq!((e.code, e.message.as_str()), (code, msg), "{what}");
        if qemu_refuses {
            assert_qemu_refuses("vpc", ps, what);
        }
    }
}

#[test]
fn blocks_over_metadata_or_each_other_open_read_only_only() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.vhd");
    let ps = p.to_str().unwrap();
    assert!(run("qemu-img", &["create", "-q", "-f", "vpc", ps, "8M"])
        .status
        .success());
    assert!(run(
        "qemu-io",
        &[
            "-f",
            "vpc",
            "-c",
            "write -P 1 0 4k",
            "-c",
            "write -P 2 2M 4k",
            ps
        ]
    )
    .status
    .success());
    let orig = std::fs::read(ps).unwrap();
    let first = u32::from_be_bytes(orig[1536..1540].try_into().unwrap());
    // Block 0's bitmap at sector 1 (over the dynamic header); block 1 on top of block 0.
    for (what, entry, value) in [("over the header", 0usize, 1u32), ("shared", 1, first)] {
        let mut b = orig.clone();
        put32(&mut b, 1536 + 4 * entry, value);
        std::fs::write(ps, &b).unwrap();
        let e = open_driver(
            "vpc",
            storage(ps, false, false),
            &OpenOptions {
                read_only: false,
                ..Default::default()
            },
        )
        .err()
        .unwrap_or_else(|| panic!("{what}: opened writable"));
        assert_eq!(e.code, ErrorCode::Corrupt, "{what}");
        assert!(
            e.message
                .contains("overlaps the image metadata or another block"),
            "{what}: {}",
            e.message
        );
        open_driver(
            "vpc",
            storage(ps, true, false),
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    }
}

#[test]
fn a_fixed_vhd_larger_than_its_file_opens_read_only_only() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.vhd");
    let ps = p.to_str().unwrap();
    assert!(run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed,force_size=on",
            ps,
            "4M"
        ]
    )
    .status
    .success());
    let mut b = std::fs::read(ps).unwrap();
    let n = b.len();
    b[n - 512 + 48..n - 512 + 56].copy_from_slice(&(8u64 << 20).to_be_bytes());
    let s = sum(&b[n - 512..], 64);
    b[n - 512 + 64..n - 512 + 68].copy_from_slice(&s.to_be_bytes());
    std::fs::write(ps, &b).unwrap();
    let e = open_driver(
        "vpc",
        storage(ps, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .err()
    .expect("opened writable");
    assert_eq!(e.code, ErrorCode::Corrupt);
    assert_eq!(
        e.message,
        "fixed VHD claims 8388608 bytes but holds 4194304 before its footer; open it read-only"
    );
    let d = open_driver(
        "vpc",
        storage(ps, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = vec![1u8; 1 << 20];
    d.read(7 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0), "past the file reads as zeros");
}
