//! Hostile QED images: one patched field per QEMU limit, each refused with a typed error (at
//! open, or at the first access of the bad mapping), never a panic. Needs no QEMU.
#[allow(dead_code)]
mod common;
use common::storage;
use qimg_core::{BlockDriver, ErrorCode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

const CS: usize = 65536;

/// A default QED image (64 KiB clusters, 4-cluster tables, 8 MiB) with data at offset 0.
fn good_image(dir: &std::path::Path) -> Vec<u8> {
    let img = dir.join("good.qed");
    let i = img.to_str().unwrap();
    create_image(
        "qed",
        storage(i, false, true),
        &CreateOptions {
            size: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open_driver("qed", storage(i, false, false), &OpenOptions::default()).unwrap();
    d.write(0, &vec![0x5a; 2 * CS]).unwrap();
    d.close().unwrap();
    drop(d);
    std::fs::read(&img).unwrap()
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

fn open(path: &str) -> qimg_core::Result<Arc<dyn BlockDriver>> {
    open_driver(
        "qed",
        storage(path, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

/// Open (and read the first cluster of) a patched copy; return the error code.
fn code_of(dir: &std::path::Path, good: &[u8], patch: impl Fn(&mut Vec<u8>)) -> ErrorCode {
    let mut b = good.to_vec();
    patch(&mut b);
    let p = dir.join("bad.qed");
    std::fs::write(&p, &b).unwrap();
    match open(p.to_str().unwrap()) {
        Err(e) => e.code,
        Ok(d) => {
            let mut buf = vec![0u8; CS];
            d.read(0, &mut buf)
                .expect_err("hostile mapping must fail")
                .code
        }
    }
}

#[test]
fn hostile_headers_are_refused_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    assert!(open(dir.path().join("good.qed").to_str().unwrap()).is_ok());
    let l1 = CS;
    let l2 = u64::from_le_bytes(good[l1..l1 + 8].try_into().unwrap()) as usize;
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, ErrorCode, Patch)> = vec![
        (
            "bad magic",
            ErrorCode::WrongFormat,
            Box::new(|b| b[3] = b'X'),
        ),
        (
            "truncated header",
            ErrorCode::Corrupt,
            Box::new(|b| b.truncate(40)),
        ),
        (
            "unknown feature",
            ErrorCode::Unsupported,
            Box::new(|b| put64(b, 16, 1 << 40)),
        ),
        (
            "cluster size below 4K",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 4, 2048)),
        ),
        (
            "cluster size above 64M",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 4, 128 << 20)),
        ),
        (
            "cluster size not a power of 2",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 4, 65536 + 4096)),
        ),
        (
            "table size 0",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 8, 0)),
        ),
        (
            "table size 3",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 8, 3)),
        ),
        (
            "table size 32",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 8, 32)),
        ),
        (
            "header size 0",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 12, 0)),
        ),
        (
            "header size overflows",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 12, u32::MAX)),
        ),
        (
            "image size not sector aligned",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 48, (8 << 20) + 100)),
        ),
        (
            "image size beyond the tables",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 48, 1 << 60)),
        ),
        (
            "L1 offset unaligned",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 40, 65536 + 8)),
        ),
        (
            "L1 offset inside header",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 40, 0)),
        ),
        (
            "L1 table past end of file",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 40, 1 << 40)),
        ),
        (
            "L1 offset wraps",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 40, !0xffff)),
        ),
        (
            "backing name outside header",
            ErrorCode::Corrupt,
            Box::new(|b| {
                put64(b, 16, 1);
                put32(b, 56, 65000);
                put32(b, 60, 4000);
            }),
        ),
        (
            "L2 offset past end of file",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l1, 1 << 40)),
        ),
        (
            "L2 offset unaligned",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l1, l2 as u64 + 512)),
        ),
        (
            "data cluster past end of file",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l2, 1 << 40)),
        ),
        (
            "data cluster inside header",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l2, 4096)),
        ),
    ];
    for (name, want, patch) in cases {
        assert_eq!(code_of(dir.path(), &good, patch), want, "{name}");
    }
}

/// Creating with out-of-range options fails with QEMU's messages.
#[test]
fn create_rejects_invalid_options() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.qed");
    let i = p.to_str().unwrap();
    for (co, msg) in [
        (CreateOptions { size: 1 << 20, cluster_size: Some(2048), ..Default::default() }, "QED cluster size must be within range [4096, 67108864] and power of 2"),
        (CreateOptions { size: 1 << 20, cluster_size: Some(12288), ..Default::default() }, "QED cluster size must be within range [4096, 67108864] and power of 2"),
        (CreateOptions { size: 1 << 20, table_size: Some(3), ..Default::default() }, "QED table size must be within range [1, 16] and power of 2"),
        (CreateOptions { size: 1 << 20, table_size: Some(0), ..Default::default() }, "QED table size must be within range [1, 16] and power of 2"),
        (CreateOptions { size: 1 << 47, ..Default::default() }, "QED image size must be a non-zero multiple of cluster size and less than 70368744177664 bytes"),
        (CreateOptions { size: 1 << 20, preallocation: qimg_formats::Preallocation::Metadata, ..Default::default() }, "Unsupported preallocation mode: metadata"),
    ] {
        let e = create_image("qed", storage(i, false, true), &co).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.message, msg);
    }
}
