//! qcow (v1) against qemu-img/qemu-io: images QEMU writes (plain, with a backing file,
//! compressed by `convert -c`) read back identically; images qimg writes match under
//! `qemu-img compare` (qcow has no check: qemu-img exits 63); random writes against a model.
mod common;
use common::{have_qemu, run, serial, storage};
use qimg_core::{BlockDriver, LayerStatus};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

fn open(path: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    open_driver(
        "qcow",
        storage(path, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap()
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|x| {
            if (x / 65536) % 3 == 1 {
                0
            } else {
                (x * 7 % 253) as u8
            }
        })
        .collect()
}

#[test]
fn qemu_written_reads_back() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.qcow");
    let raw = dir.path().join("q.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    ok(
        &run("qemu-img", &["create", "-q", "-f", "qcow", i, "9M"]),
        "create",
    );
    ok(
        &run(
            "qemu-io",
            &[
                "-c",
                "write -P 0x11 0 100k",
                "-c",
                "write -P 0x22 3M 5000",
                "-c",
                "write -P 0x33 8M 1M",
                "-c",
                "write -z 40k 8k",
                i,
            ],
        ),
        "qemu-io",
    );
    ok(
        &run("qemu-img", &["convert", "-f", "qcow", "-O", "raw", i, r]),
        "convert",
    );
    let d = open(i, true);
    let mut got = vec![0u8; d.virtual_size() as usize];
    d.read(0, &mut got).unwrap();
    assert!(got == std::fs::read(&raw).unwrap());
    assert_eq!(d.info().unwrap().cluster_size, Some(4096));
}

#[test]
fn compressed_clusters_read() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let img = dir.path().join("c.qcow");
    let data = pattern(3 << 20);
    std::fs::write(&src, &data).unwrap();
    let i = img.to_str().unwrap();
    // qemu-img 10 exits 1 without a message after `convert -c -O qcow` although every cluster
    // is written: judge the image by QEMU's own reading of it instead.
    let _ = run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow",
            src.to_str().unwrap(),
            i,
        ],
    );
    ok(
        &run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "qcow",
                "-F",
                "raw",
                i,
                src.to_str().unwrap(),
            ],
        ),
        "QEMU reads it",
    );
    let d = open(i, true);
    let mut got = vec![0u8; data.len()];
    d.read(0, &mut got).unwrap();
    assert!(got == data);
    let st = d.block_status(0, 4096).unwrap();
    assert!(matches!(
        st[0].status,
        LayerStatus::Data {
            compressed: true,
            ..
        }
    ));
    drop(d);
    // Overwriting part of a compressed cluster keeps the rest of it.
    let d = open(i, false);
    d.write(100, &[0xee; 50]).unwrap();
    d.close().unwrap();
    drop(d);
    let mut want = data.clone();
    want[100..150].fill(0xee);
    std::fs::write(&src, &want).unwrap();
    ok(
        &run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "qcow",
                "-F",
                "raw",
                i,
                src.to_str().unwrap(),
            ],
        ),
        "compare",
    );
}

#[test]
fn model_random_writes_and_qemu_compare() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.qcow");
    let raw = dir.path().join("m.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    let size = 7u64 << 20;
    create_image(
        "qcow",
        storage(i, false, true),
        &CreateOptions {
            size,
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; size as usize];
    let mut s = 99u64;
    for round in 0..3 {
        let d = open(i, false);
        for _ in 0..70 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (s >> 20) % size;
            let len = ((s >> 8) % 200_000).min(size - off);
            let byte = (s >> 56) as u8 | 1;
            if s.is_multiple_of(5) {
                d.write_zeroes(off, len, true).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            } else {
                d.write(off, &vec![byte; len as usize]).unwrap();
                model[off as usize..(off + len) as usize].fill(byte);
            }
        }
        let mut got = vec![0u8; model.len()];
        d.read(0, &mut got).unwrap();
        assert!(got == model, "round {round}");
        d.close().unwrap();
        drop(d);
        std::fs::write(&raw, &model).unwrap();
        ok(
            &run("qemu-img", &["compare", "-f", "qcow", "-F", "raw", i, r]),
            "compare",
        );
        let chk = run("qemu-img", &["check", i]);
        assert_eq!(chk.status.code(), Some(63), "qcow has no check");
    }
    let info = run("qemu-img", &["info", "--output=json", i]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["virtual-size"], size);
    assert_eq!(v["cluster-size"], 4096);
}

#[test]
fn backing_file_layout_and_copy_on_write() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let top = dir.path().join("top.qcow");
    let qtop = dir.path().join("qtop.qcow");
    let exp = dir.path().join("exp.raw");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    let mut model = pattern(2 << 20);
    std::fs::write(&base, &model).unwrap();
    let co = CreateOptions {
        size: 2 << 20,
        backing_file: Some("base.raw".into()),
        backing_fmt: Some("raw".into()),
        ..Default::default()
    };
    create_image("qcow", storage(t, false, true), &co).unwrap();
    let q = qtop.to_str().unwrap();
    ok(
        &run(
            "qemu-img",
            &[
                "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", q,
            ],
        ),
        "create",
    );
    assert_eq!(
        std::fs::read(&top).unwrap(),
        std::fs::read(&qtop).unwrap(),
        "same bytes as QEMU"
    );
    let d = open(t, false);
    let bd = open_driver(
        "raw",
        storage(b, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    d.set_backing(Some(bd)).unwrap();
    for (off, len, byte) in [
        (1000usize, 3000usize, 7u8),
        (70_000, 100, 8),
        (1 << 20, 65536, 9),
    ] {
        d.write(off as u64, &vec![byte; len]).unwrap();
        model[off..off + len].fill(byte);
    }
    d.write_zeroes(4096, 8192, true).unwrap();
    model[4096..12288].fill(0);
    d.close().unwrap();
    drop(d);
    std::fs::write(&exp, &model).unwrap();
    ok(
        &run(
            "qemu-img",
            &["compare", "-F", "raw", t, exp.to_str().unwrap()],
        ),
        "compare",
    );
    let info = run("qemu-img", &["info", "--output=json", t]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["backing-filename"], "base.raw");
    assert_eq!(v["cluster-size"], 512);
    assert!(v.get("backing-filename-format").is_none());
}

#[test]
fn created_image_equals_qemus() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for size in [1u64 << 20, 10 << 20, 1000, (1 << 30) + 512] {
        let a = dir.path().join("a.qcow");
        let b = dir.path().join("b.qcow");
        create_image(
            "qcow",
            storage(a.to_str().unwrap(), false, true),
            &CreateOptions {
                size,
                ..Default::default()
            },
        )
        .unwrap();
        ok(
            &run(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow",
                    b.to_str().unwrap(),
                    &size.to_string(),
                ],
            ),
            "create",
        );
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "size {size}"
        );
    }
}

/// Emptying the top image for `commit` leaves exactly the file QEMU's `qcow_make_empty` leaves.
#[test]
fn make_empty_matches_qemu_commit() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 4 << 20]).unwrap();
    let mut tops = Vec::new();
    for name in ["a.qcow", "b.qcow"] {
        let t = dir.path().join(name);
        let ts = t.to_str().unwrap().to_string();
        ok(
            &run(
                "qemu-img",
                &[
                    "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", &ts,
                ],
            ),
            "create",
        );
        ok(
            &run("qemu-io", &["-f", "qcow", "-c", "write -P 9 0 64k", &ts]),
            "io",
        );
        tops.push(ts);
    }
    ok(&run("qemu-img", &["commit", &tops[0]]), "commit");
    let d = open(&tops[1], false);
    d.make_empty().unwrap();
    assert!(d
        .block_status(0, 4 << 20)
        .unwrap()
        .iter()
        .all(|e| e.status == LayerStatus::Unallocated));
    d.close().unwrap();
    drop(d);
    assert_eq!(
        std::fs::read(&tops[0]).unwrap(),
        std::fs::read(&tops[1]).unwrap()
    );
}

/// The extremes of the header's limits (512-byte clusters with 64-entry L2 tables, 64 KiB
/// clusters with 8192-entry tables; QEMU never creates these) are written and read correctly.
#[test]
fn cluster_and_l2_size_limits() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("l.qcow");
    let raw = dir.path().join("l.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    for (cb, lb) in [(9u8, 6u8), (16, 13), (9, 13), (16, 6)] {
        create_image(
            "qcow",
            storage(i, false, true),
            &CreateOptions {
                size: 3 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let mut b = std::fs::read(&img).unwrap();
        b[32] = cb;
        b[33] = lb;
        b.resize(48 + 4096, 0); // room for the largest L1 (3 MiB / 2^15 = 96 entries)
        std::fs::write(&img, &b).unwrap();
        let d = open(i, false);
        assert_eq!(d.info().unwrap().cluster_size, Some(1 << cb));
        let mut model = vec![0u8; 3 << 20];
        for (k, (off, len)) in [
            (0usize, 700usize),
            (1000, 70_000),
            (1 << 20, 300_000),
            ((3 << 20) - 5000, 5000),
        ]
        .into_iter()
        .enumerate()
        {
            d.write(off as u64, &vec![k as u8 + 1; len]).unwrap();
            model[off..off + len].fill(k as u8 + 1);
        }
        d.close().unwrap();
        drop(d);
        std::fs::write(&raw, &model).unwrap();
        ok(
            &run("qemu-img", &["compare", "-f", "qcow", "-F", "raw", i, r]),
            &format!("cluster_bits {cb} l2_bits {lb}"),
        );
    }
}

/// Compressed writes (`convert -c`) pack deflated clusters QEMU and 7-Zip read; incompressible
/// clusters are stored plain.
#[test]
fn compressed_writes_qemu_reads() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.qcow");
    let raw = dir.path().join("w.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    let size = (1u64 << 20) + 1536; // a partial last cluster
    create_image(
        "qcow",
        storage(i, false, true),
        &CreateOptions {
            size,
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = pattern(size as usize);
    let mut x = 5u64;
    for b in model[8192..12288].iter_mut() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        *b = (x >> 56) as u8; // incompressible cluster 2
    }
    let d = open(i, false);
    let cs = d.compressed_cluster_size().unwrap();
    assert_eq!(cs, 4096);
    for off in (0..size).step_by(cs as usize) {
        let end = (off + cs).min(size);
        d.write_compressed(off, &model[off as usize..end as usize], None)
            .unwrap();
    }
    d.write(5000, &[0xab; 100]).unwrap(); // rewrite inside a compressed cluster
    model[5000..5100].fill(0xab);
    let st = d.block_status(0, 4096).unwrap();
    assert!(matches!(
        st[0].status,
        LayerStatus::Data {
            compressed: true,
            ..
        }
    ));
    let st = d.block_status(8192, 4096).unwrap();
    assert!(matches!(
        st[0].status,
        LayerStatus::Data {
            compressed: false,
            ..
        }
    ));
    d.close().unwrap();
    drop(d);
    std::fs::write(&raw, &model).unwrap();
    ok(
        &run("qemu-img", &["compare", "-f", "qcow", "-F", "raw", i, r]),
        "compare",
    );
    assert!(
        std::fs::metadata(&img).unwrap().len() < size / 2,
        "compressed"
    );
    let map = run("qemu-img", &["map", "--output=json", i]);
    assert!(String::from_utf8_lossy(&map.stdout).contains("\"compressed\": true"));
}

/// Compressed clusters copy as stored between qcow images, and from a 4 KiB-cluster zlib qcow2
/// (the same raw deflate), without inflating them.
#[test]
fn compressed_clusters_copy_as_stored() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.raw");
    let data = pattern(1 << 20);
    std::fs::write(&src, &data).unwrap();
    let s = src.to_str().unwrap();
    let q2 = dir.path().join("s.qcow2");
    ok(
        &run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=4k",
                s,
                q2.to_str().unwrap(),
            ],
        ),
        "qcow2 -c",
    );
    let q1 = dir.path().join("s.qcow");
    let _ = run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow",
            s,
            q1.to_str().unwrap(),
        ],
    );
    for (fmt, from) in [("qcow2", &q2), ("qcow", &q1)] {
        let a = open_driver(
            fmt,
            storage(from.to_str().unwrap(), true, false),
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let out = dir.path().join(format!("o-{fmt}.qcow"));
        let o = out.to_str().unwrap();
        create_image(
            "qcow",
            storage(o, false, true),
            &CreateOptions {
                size: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let b = open(o, false);
        let mut copied = 0;
        for off in (0..1u64 << 20).step_by(4096) {
            match a.read_compressed_raw(off).unwrap() {
                Some(c) if b.write_compressed_raw(off, &c).unwrap() => copied += 1,
                _ => {
                    let mut buf = vec![0u8; 4096];
                    a.read(off, &mut buf).unwrap();
                    b.write(off, &buf).unwrap();
                }
            }
        }
        assert!(copied > 100, "{fmt}: {copied} clusters copied as stored");
        b.close().unwrap();
        drop(b);
        ok(
            &run("qemu-img", &["compare", "-f", "qcow", "-F", "raw", o, s]),
            fmt,
        );
    }
}
