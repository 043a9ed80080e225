//! Hostile qcow (v1) images: one patched field per QEMU limit, each refused with a typed error
//! (at open, or at the first access of the bad mapping), never a panic or a huge allocation.
//! AES-encrypted images opened without a key are refused as invalid arguments. Needs no QEMU.
#[allow(dead_code)]
mod common;
use common::storage;
use qimg_core::{BlockDriver, ErrorCode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

/// A qcow image (4 KiB clusters, 4 MiB) with data in its first two clusters.
fn good_image(dir: &std::path::Path) -> Vec<u8> {
    let img = dir.join("good.qcow");
    let i = img.to_str().unwrap();
    create_image(
        "qcow",
        storage(i, false, true),
        &CreateOptions {
            size: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open_driver("qcow", storage(i, false, false), &OpenOptions::default()).unwrap();
    d.write(0, &[0x5a; 8192]).unwrap();
    d.close().unwrap();
    drop(d);
    std::fs::read(&img).unwrap()
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

fn open(path: &str) -> qimg_core::Result<Arc<dyn BlockDriver>> {
    open_driver(
        "qcow",
        storage(path, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

fn code_of(dir: &std::path::Path, good: &[u8], patch: &dyn Fn(&mut Vec<u8>)) -> ErrorCode {
    let mut b = good.to_vec();
    patch(&mut b);
    let p = dir.join("bad.qcow");
    std::fs::write(&p, &b).unwrap();
    match open(p.to_str().unwrap()) {
        Err(e) => e.code,
        Ok(d) => {
            let mut buf = vec![0u8; 4096];
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
    let l1 = be64(&good, 40) as usize;
    let l2 = be64(&good, l1) as usize;
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, ErrorCode, Patch)> = vec![
        (
            "bad magic",
            ErrorCode::WrongFormat,
            Box::new(|b| b[0] = b'X'),
        ),
        (
            "truncated header",
            ErrorCode::Corrupt,
            Box::new(|b| b.truncate(30)),
        ),
        (
            "version 2",
            ErrorCode::Unsupported,
            Box::new(|b| put32(b, 4, 2)),
        ),
        ("size 0", ErrorCode::Corrupt, Box::new(|b| put64(b, 24, 0))),
        ("size 1", ErrorCode::Corrupt, Box::new(|b| put64(b, 24, 1))),
        (
            "cluster bits 8",
            ErrorCode::Corrupt,
            Box::new(|b| b[32] = 8),
        ),
        (
            "cluster bits 17",
            ErrorCode::Corrupt,
            Box::new(|b| b[32] = 17),
        ),
        ("l2 bits 5", ErrorCode::Corrupt, Box::new(|b| b[33] = 5)),
        ("l2 bits 14", ErrorCode::Corrupt, Box::new(|b| b[33] = 14)),
        (
            "crypt method 2",
            ErrorCode::Corrupt,
            Box::new(|b| put32(b, 36, 2)),
        ),
        (
            "AES encryption without a key",
            ErrorCode::InvalidArgument,
            Box::new(|b| put32(b, 36, 1)),
        ),
        (
            "size overflows",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 24, u64::MAX - 10)),
        ),
        (
            "L1 too large",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 24, 1 << 62)),
        ),
        (
            "L1 past end of file",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 40, 1 << 40)),
        ),
        (
            "L1 offset wraps",
            ErrorCode::Corrupt,
            Box::new(|b| put64(b, 40, u64::MAX - 4)),
        ),
        (
            "backing name too long",
            ErrorCode::Corrupt,
            Box::new(|b| {
                put64(b, 8, 48);
                put32(b, 16, 1024);
            }),
        ),
        (
            "backing name past end of file",
            ErrorCode::Corrupt,
            Box::new(|b| {
                put64(b, 8, 1 << 40);
                put32(b, 16, 10);
            }),
        ),
        (
            "L2 past end of file",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l1, 1 << 40)),
        ),
        (
            "data past end of file",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l2, 1 << 40)),
        ),
        (
            "compressed data past end of file",
            ErrorCode::Corrupt,
            Box::new(move |b| put64(b, l2, (1 << 63) | (100 << 51) | (1 << 40))),
        ),
        (
            "compressed data does not inflate",
            ErrorCode::Corrupt,
            Box::new(move |b| {
                let data = be64(b, l2);
                put64(b, l2, (1 << 63) | (4000 << 51) | data);
                b[data as usize..data as usize + 16].fill(0xff);
            }),
        ),
    ];
    for (name, want, patch) in cases {
        assert_eq!(code_of(dir.path(), &good, &*patch), want, "{name}");
    }
}
