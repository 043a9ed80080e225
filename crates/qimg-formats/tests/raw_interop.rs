//! raw driver: creation with each preallocation mode (size and allocated bytes), reads and
//! writes, and block status against `qemu-img map` on a sparse file.
mod common;
use common::{have_qemu, serial, storage};
use qimg_core::LayerStatus;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions, Preallocation};
use std::process::Command;

#[test]
fn preallocation_modes_size_and_allocate() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    for (mode, min_alloc) in [
        (Preallocation::Off, 0u64),
        (Preallocation::Falloc, 4 << 20),
        (Preallocation::Full, 4 << 20),
    ] {
        let p = dir.path().join("r.raw");
        let s = storage(p.to_str().unwrap(), false, true);
        create_image(
            "raw",
            s.clone(),
            &CreateOptions {
                size: 4 << 20,
                preallocation: mode,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.size().unwrap(), 4 << 20);
        let alloc = s.allocated_bytes().unwrap();
        assert!(alloc >= min_alloc, "{mode:?}: {alloc} allocated");
        if mode == Preallocation::Off {
            assert!(alloc < 1 << 20, "off must stay sparse, {alloc} allocated");
        }
    }
    let p = dir.path().join("m.raw");
    let e = create_image(
        "raw",
        storage(p.to_str().unwrap(), false, true),
        &CreateOptions {
            size: 1 << 20,
            preallocation: Preallocation::Metadata,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.code, qimg_core::ErrorCode::InvalidArgument);
}

#[test]
fn block_status_matches_qemu_map() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.raw");
    let ps = p.to_str().unwrap();
    create_image(
        "raw",
        storage(ps, false, true),
        &CreateOptions {
            size: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open_driver(
        "raw",
        storage(ps, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap();
    d.write(1 << 20, &vec![7u8; 1 << 20]).unwrap();
    d.write(5 << 20, &vec![9u8; 65536]).unwrap();
    d.write_zeroes(1 << 20, 65536, true).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    d.read(0, &mut buf).unwrap();
    assert!(buf[(1 << 20)..(1 << 20) + 65536].iter().all(|&b| b == 0));
    assert!(buf[(1 << 20) + 65536..2 << 20].iter().all(|&b| b == 7));
    let mut ours = Vec::new();
    let mut pos = 0;
    while pos < 8 << 20 {
        for e in d.block_status(pos, (8 << 20) - pos).unwrap() {
            let data = matches!(e.status, LayerStatus::Data { .. });
            match ours.last_mut() {
                Some((_, len, last)) if *last == data => *len += e.length,
                _ => ours.push((e.start, e.length, data)),
            }
            pos = e.start + e.length;
        }
    }
    d.close().unwrap();
    drop(d);
    let out = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "raw", ps])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let qemu: Vec<(u64, u64, bool)> = serde_json::from_str::<Vec<serde_json::Value>>(&text)
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["start"].as_u64().unwrap(),
                v["length"].as_u64().unwrap(),
                v["data"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(ours, qemu);
}
