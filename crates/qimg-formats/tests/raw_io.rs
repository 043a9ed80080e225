//! raw driver against qemu-img: created files match `qemu-img create -f raw` (size, allocation,
//! map) for every preallocation mode; reads, writes and write-zeroes round-trip and read back
//! the same through qemu-img; odd-sized files are sized and mapped as QEMU does.
mod common;
use common::{have_qemu, serial, storage};
use qimg_core::{BlockDriver, ErrorCode, LayerStatus};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions, Preallocation};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;

/// `qemu-img map --output=json -f raw` as (start, length, data, zero, offset).
fn qemu_map(path: &str) -> Vec<(u64, u64, bool, bool, Option<u64>)> {
    let out = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "raw", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["start"].as_u64().unwrap(),
                v["length"].as_u64().unwrap(),
                v["data"].as_bool().unwrap(),
                v["zero"].as_bool().unwrap(),
                v["offset"].as_u64(),
            )
        })
        .collect()
}

/// Our block status over the whole image in the same shape, adjacent equal runs merged.
fn our_map(d: &dyn BlockDriver) -> Vec<(u64, u64, bool, bool, Option<u64>)> {
    let size = d.virtual_size();
    let mut out: Vec<(u64, u64, bool, bool, Option<u64>)> = Vec::new();
    let mut pos = 0;
    while pos < size {
        for e in d.block_status(pos, size - pos).unwrap() {
            let (data, zero, off) = match e.status {
                LayerStatus::Data { host_offset, .. } => (true, false, host_offset),
                LayerStatus::Zero { host_offset } => (false, true, host_offset),
                LayerStatus::Unallocated => (false, false, None),
            };
            match out.last_mut() {
                Some(l)
                    if l.2 == data
                        && l.3 == zero
                        && l.4.zip(off).is_some_and(|(a, b)| a + l.1 == b) =>
                {
                    l.1 += e.length
                }
                _ => out.push((e.start, e.length, data, zero, off)),
            }
            pos = e.start + e.length;
        }
    }
    out
}

fn blocks(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

#[test]
fn create_matches_qemu_img_create() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (mode, name) in [
        (Preallocation::Off, "off"),
        (Preallocation::Falloc, "falloc"),
        (Preallocation::Full, "full"),
    ] {
        for size in [0u64, 100, 1000, 4096, 5000, 3 << 20] {
            let ours = dir.path().join(format!("ours-{name}-{size}.raw"));
            let theirs = dir.path().join(format!("qemu-{name}-{size}.raw"));
            let (o, t) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
            let s = storage(o, false, true);
            create_image(
                "raw",
                s.clone(),
                &CreateOptions {
                    size,
                    preallocation: mode,
                    ..Default::default()
                },
            )
            .unwrap();
            s.flush().unwrap();
            drop(s);
            let st = Command::new("qemu-img")
                .args(["create", "-q", "-f", "raw", "-o"])
                .arg(format!("preallocation={name}"))
                .args([t, &size.to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            let what = format!("{name} {size}");
            let (ol, tl) = (
                std::fs::metadata(o).unwrap().len(),
                std::fs::metadata(t).unwrap().len(),
            );
            assert_eq!(ol, tl, "{what}: size");
            assert_eq!(ol, size.next_multiple_of(512), "{what}: rounded size");
            assert_eq!(blocks(o), blocks(t), "{what}: st_blocks");
            if mode != Preallocation::Off {
                assert!(blocks(o) * 512 >= ol, "{what}: allocated");
            }
            assert_eq!(qemu_map(o), qemu_map(t), "{what}: map");
            let d = open_driver(
                "raw",
                storage(o, true, false),
                &OpenOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .unwrap();
            if size > 0 {
                assert_eq!(our_map(&*d), qemu_map(t), "{what}: our block status");
            }
            assert!(std::fs::read(o).unwrap().iter().all(|&b| b == 0));
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
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(e.message, "Unsupported preallocation mode: metadata");
    let e = create_image(
        "raw",
        storage(p.to_str().unwrap(), false, true),
        &CreateOptions {
            size: 1 << 20,
            backing_file: Some("b".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported);
}

/// A small deterministic byte pattern.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn read_write_zeroes_round_trip() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rw.raw");
    let ps = p.to_str().unwrap();
    const SIZE: u64 = 4 << 20;
    create_image(
        "raw",
        storage(ps, false, true),
        &CreateOptions {
            size: SIZE,
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
    assert_eq!(d.format_name(), "raw");
    assert_eq!(d.virtual_size(), SIZE);
    let mut model = vec![0u8; SIZE as usize];
    let ops: [(u64, usize, u8); 8] = [
        (0, 65536, 0),      // write
        (1000, 3000, 0),    // unaligned write
        (65536, 300000, 0), // write across clusters
        (2000, 70000, 1),   // write_zeroes keeping space
        (131072, 65536, 2), // write_zeroes may unmap (hole)
        (3 << 20, 12345, 0),
        (SIZE - 7, 7, 0), // the last bytes
        (3 << 20, 100, 1),
    ];
    for (i, (off, len, kind)) in ops.into_iter().enumerate() {
        let range = off as usize..off as usize + len;
        match kind {
            0 => {
                let data = pattern(i as u64 + 1, len);
                d.write(off, &data).unwrap();
                model[range].copy_from_slice(&data);
            }
            k => {
                d.write_zeroes(off, len as u64, k == 2).unwrap();
                model[range].fill(0);
            }
        }
    }
    let mut buf = vec![0xaau8; SIZE as usize];
    d.read(0, &mut buf).unwrap();
    assert!(buf == model, "read back differs from the model");
    let mut small = [0u8; 10];
    d.read(1995, &mut small).unwrap();
    assert_eq!(&small[..], &model[1995..2005]);
    d.discard(0, 65536).unwrap();
    model[..65536].fill(0);
    d.flush().unwrap();
    d.close().unwrap();
    drop(d);
    assert!(std::fs::read(&p).unwrap() == model, "file bytes differ");
    if have_qemu() {
        let reference = dir.path().join("ref.raw");
        std::fs::write(&reference, &model).unwrap();
        let out = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw", ps])
            .arg(&reference)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn bounds_read_only_and_resize() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.raw");
    let ps = p.to_str().unwrap();
    std::fs::write(&p, vec![5u8; 1 << 20]).unwrap();
    let ro = open_driver(
        "raw",
        storage(ps, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = [0u8; 512];
    assert_eq!(
        ro.read((1 << 20) - 256, &mut buf).unwrap_err().code,
        ErrorCode::OutOfRange
    );
    assert_eq!(ro.write(0, &buf).unwrap_err().code, ErrorCode::ReadOnly);
    assert_eq!(
        ro.write_zeroes(0, 512, true).unwrap_err().code,
        ErrorCode::ReadOnly
    );
    assert_eq!(ro.resize(2 << 20).unwrap_err().code, ErrorCode::ReadOnly);
    drop(ro);
    let d = open_driver(
        "raw",
        storage(ps, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap();
    d.resize(2 << 20).unwrap();
    assert_eq!(d.virtual_size(), 2 << 20);
    d.read((2 << 20) - 512, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    d.read((1 << 20) - 512, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 5));
    d.resize(4096).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
    assert_eq!(
        d.check(qimg_core::RepairMode::None).unwrap_err().code,
        ErrorCode::Unsupported
    );
    assert!(d.set_backing(Some(Arc::clone(&d))).is_err());
}

#[test]
fn odd_sized_file_is_sized_and_mapped_as_qemu() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd.raw");
    let ps = p.to_str().unwrap();
    std::fs::write(&p, pattern(9, 1000)).unwrap();
    let d = open_driver(
        "raw",
        storage(ps, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    // QEMU counts sizes in sectors: a 1000-byte file is a 1024-byte image.
    assert_eq!(d.virtual_size(), 1024);
    let mut buf = vec![0xffu8; 1024];
    d.read(0, &mut buf).unwrap();
    assert_eq!(&buf[..1000], &pattern(9, 1000)[..]);
    assert!(buf[1000..].iter().all(|&b| b == 0));
    if have_qemu() {
        assert_eq!(our_map(&*d), qemu_map(ps));
        let out = Command::new("qemu-img")
            .args(["info", "--output=json", "-f", "raw", ps])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["virtual-size"].as_u64(), Some(d.virtual_size()));
    }
}

#[test]
fn probe_is_weakest() {
    let _g = serial();
    assert_eq!(qimg_formats::raw::probe(b""), 1);
    assert_eq!(qimg_formats::raw::probe(b"QFI\xfb"), 1);
}
