//! qed against qemu-img/qemu-io: images QEMU writes read back identically; images qimg writes
//! (every cluster_size/table_size class, backing files) pass `qemu-img check` and `compare`;
//! random writes against a model; the need-check flag and repair after a simulated crash;
//! `check` counts equal to qemu-img's.
mod common;
use common::{have_qemu, run, serial, storage};
use qimg_core::{BlockDriver, RepairMode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

fn open(path: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    open_driver(
        "qed",
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

/// Deterministic random writes, zero writes and discards, mirrored into `model`.
fn random_ops(d: &dyn BlockDriver, model: &mut [u8], seed: u64, n: usize) {
    let size = model.len() as u64;
    let mut s = seed;
    for _ in 0..n {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (s >> 20) % size;
        let len = ((s >> 8) % 300_000).min(size - off);
        let byte = (s >> 56) as u8 | 1;
        match s % 6 {
            0 => {
                d.write_zeroes(off, len, true).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            1 => d.discard(off, len).unwrap(),
            _ => {
                d.write(off, &vec![byte; len as usize]).unwrap();
                model[off as usize..(off + len) as usize].fill(byte);
            }
        }
    }
}

#[test]
fn qemu_written_reads_back() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.qed");
    let raw = dir.path().join("q.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    for opts in [
        "cluster_size=65536",
        "cluster_size=4096,table_size=2",
        "cluster_size=1M,table_size=16",
        "cluster_size=8k,table_size=2",
    ] {
        ok(
            &run(
                "qemu-img",
                &["create", "-q", "-f", "qed", "-o", opts, i, "20M"],
            ),
            opts,
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
                    "write -z 4M 1M",
                    "-c",
                    "write -P 0x33 19M 1M",
                    "-c",
                    "write -P 0x44 4M 4096",
                    i,
                ],
            ),
            "qemu-io",
        );
        ok(
            &run("qemu-img", &["convert", "-f", "qed", "-O", "raw", i, r]),
            "convert",
        );
        let d = open(i, true);
        let mut got = vec![0u8; d.virtual_size() as usize];
        d.read(0, &mut got).unwrap();
        assert!(got == std::fs::read(&raw).unwrap(), "{opts}");
        let st = d.block_status(0, 1 << 20).unwrap();
        assert!(matches!(st[0].status, qimg_core::LayerStatus::Data { .. }));
    }
}

#[test]
fn qemu_accepts_what_qimg_wrote() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.qed");
    let raw = dir.path().join("w.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    for (cs, ts) in [
        (65536u64, 4u64),
        (4096, 2),
        (4096, 16),
        (1 << 20, 2),
        (32768, 8),
    ] {
        create_image(
            "qed",
            storage(i, false, true),
            &CreateOptions {
                size: 12 << 20,
                cluster_size: Some(cs),
                table_size: Some(ts),
                ..Default::default()
            },
        )
        .unwrap();
        let d = open(i, false);
        let mut model = vec![0u8; 12 << 20];
        random_ops(d.as_ref(), &mut model, cs ^ ts, 60);
        let mut got = vec![0u8; model.len()];
        d.read(0, &mut got).unwrap();
        assert!(got == model, "reads back ({cs} {ts})");
        d.close().unwrap();
        drop(d);
        ok(&run("qemu-img", &["check", i]), "qemu-img check");
        std::fs::write(&raw, &model).unwrap();
        ok(
            &run("qemu-img", &["compare", "-f", "qed", "-F", "raw", i, r]),
            "compare",
        );
        let info = run("qemu-img", &["info", "--output=json", i]);
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["cluster-size"], cs);
        assert_eq!(v["dirty-flag"], false);
    }
}

/// Many reopen cycles of random writes, checked by QEMU after each one.
#[test]
fn model_random_writes() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.qed");
    let raw = dir.path().join("m.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    create_image(
        "qed",
        storage(i, false, true),
        &CreateOptions {
            size: 9 << 20,
            cluster_size: Some(4096),
            table_size: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; 9 << 20];
    for round in 0..4u64 {
        let d = open(i, false);
        random_ops(d.as_ref(), &mut model, 1000 + round, 80);
        d.close().unwrap();
        drop(d);
        ok(&run("qemu-img", &["check", i]), "qemu-img check");
        std::fs::write(&raw, &model).unwrap();
        ok(
            &run("qemu-img", &["compare", "-f", "qed", "-F", "raw", i, r]),
            "compare",
        );
    }
}

#[test]
fn backing_file_reads_through_and_copies_on_write() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let top = dir.path().join("top.qed");
    let exp = dir.path().join("exp.raw");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    let mut model: Vec<u8> = (0..(4u32 << 20)).map(|x| (x % 251) as u8).collect();
    std::fs::write(&base, &model).unwrap();
    create_image(
        "qed",
        storage(t, false, true),
        &CreateOptions {
            size: 4 << 20,
            backing_file: Some("base.raw".into()),
            backing_fmt: Some("raw".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let info = run("qemu-img", &["info", "--output=json", t]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["backing-filename"], "base.raw");
    assert_eq!(v["backing-filename-format"], "raw");
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
    d.write(1000, &[7u8; 3000]).unwrap();
    model[1000..4000].fill(7);
    d.write_zeroes(65536, 65536, true).unwrap();
    model[65536..131072].fill(0);
    d.write(200_000, &[9u8; 70_000]).unwrap();
    model[200_000..270_000].fill(9);
    let mut got = vec![0u8; model.len()];
    d.read(0, &mut got).unwrap();
    assert!(got == model);
    d.close().unwrap();
    drop(d);
    ok(&run("qemu-img", &["check", t]), "check");
    std::fs::write(&exp, &model).unwrap();
    ok(
        &run(
            "qemu-img",
            &["compare", "-F", "raw", t, exp.to_str().unwrap()],
        ),
        "compare",
    );
}

/// A crash after the need-check flag was set leaves it set; qemu-img reports it dirty, and a
/// read-write open repairs invalid offsets as QEMU's does, then clears it.
#[test]
fn need_check_flag_and_repair_on_open() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.qed");
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
    let d = open(i, false);
    d.write(0, &[1u8; 200_000]).unwrap();
    d.flush().unwrap();
    // Crash: no close. The flag stays set on disk.
    drop(d);
    let mut b = std::fs::read(&img).unwrap();
    assert_ne!(u64::from_le_bytes(b[16..24].try_into().unwrap()) & 2, 0);
    let info = run("qemu-img", &["info", "--output=json", i]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    // qemu-img info does not report QED's need-check flag as dirty.
    assert_eq!(v["dirty-flag"], false);
    // Point the third data cluster past the end of the file, as a torn table write might.
    let l1 = u64::from_le_bytes(b[65536..65544].try_into().unwrap()) as usize;
    let bad = (b.len() as u64 + (1 << 20)).to_le_bytes();
    b[l1 + 16..l1 + 24].copy_from_slice(&bad);
    std::fs::write(&img, &b).unwrap();
    let chk = run("qemu-img", &["check", "--output=json", i]);
    assert_eq!(chk.status.code(), Some(2), "corruption reported");
    let q: serde_json::Value = serde_json::from_slice(&chk.stdout).unwrap();
    let ro = open(i, true);
    let r = ro.check(RepairMode::None).unwrap();
    assert_eq!(r.corruptions, q["corruptions"].as_u64().unwrap());
    assert_eq!(r.total_clusters, q["total-clusters"].as_u64());
    assert_eq!(r.allocated_clusters, q["allocated-clusters"].as_u64());
    drop(ro);
    // A read-write open repairs (before its first I/O) and clears the flag; the damaged
    // cluster now reads as zeros, as after QEMU's repair.
    let d = open(i, false);
    let mut got = vec![0u8; 3 * 65536];
    d.read(0, &mut got).unwrap();
    assert!(got[..131072].iter().all(|&x| x == 1));
    assert!(got[131072..].iter().all(|&x| x == 0));
    let h = std::fs::read(&img).unwrap();
    assert_eq!(u64::from_le_bytes(h[16..24].try_into().unwrap()) & 2, 0);
    d.close().unwrap();
    drop(d);
    // The cluster the damaged entry pointed at is leaked now, as after QEMU's repair.
    let chk = run("qemu-img", &["check", "--output=json", i]);
    assert_eq!(chk.status.code(), Some(3), "leaks only after repair");
}

/// `check` and `check -r all` agree with qemu-img on leaks (QED never reclaims them).
#[test]
fn check_counts_match_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("k.qed");
    let i = img.to_str().unwrap();
    ok(
        &run("qemu-img", &["create", "-q", "-f", "qed", i, "10M"]),
        "create",
    );
    ok(
        &run(
            "qemu-io",
            &["-c", "write -P 1 0 100k", "-c", "write -P 2 5M 64k", i],
        ),
        "io",
    );
    let f = std::fs::OpenOptions::new().append(true).open(&img).unwrap();
    f.set_len(f.metadata().unwrap().len() + 3 * 65536).unwrap();
    drop(f);
    let chk = run("qemu-img", &["check", "--output=json", i]);
    assert_eq!(chk.status.code(), Some(3));
    let q: serde_json::Value = serde_json::from_slice(&chk.stdout).unwrap();
    for repair in [RepairMode::None, RepairMode::All] {
        let d = open(i, repair == RepairMode::None);
        let r = d.check(repair).unwrap();
        assert_eq!(r.leaks, q["leaks"].as_u64().unwrap());
        assert_eq!(r.corruptions, 0);
        assert_eq!(r.allocated_clusters, q["allocated-clusters"].as_u64());
        assert_eq!(r.fragmented_clusters, q["fragmented-clusters"].as_u64());
        assert_eq!(r.total_clusters, q["total-clusters"].as_u64());
        d.close().unwrap();
    }
}

#[test]
fn resize_grows_only() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("r.qed");
    let i = img.to_str().unwrap();
    create_image(
        "qed",
        storage(i, false, true),
        &CreateOptions {
            size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open(i, false);
    assert!(d.resize(512 << 10).is_err());
    d.resize(3 << 20).unwrap();
    d.write((3 << 20) - 4096, &[5u8; 4096]).unwrap();
    d.close().unwrap();
    drop(d);
    let info = run("qemu-img", &["info", "--output=json", i]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["virtual-size"], 3 << 20);
    ok(&run("qemu-img", &["check", i]), "check");
}

/// QEMU creates `table_size=1` images but cannot open them (its table offset check rejects every
/// one-cluster table); qimg reads and writes them, and converts them for QEMU.
#[test]
fn table_size_one_qemu_refuses_qimg_handles() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("one.qed");
    let i = img.to_str().unwrap();
    ok(
        &run(
            "qemu-img",
            &["create", "-q", "-f", "qed", "-o", "table_size=1", i, "4M"],
        ),
        "create",
    );
    let info = run("qemu-img", &["info", i]);
    assert!(!info.status.success());
    assert!(String::from_utf8_lossy(&info.stderr).contains("QED table offset is invalid"));
    let d = open(i, false);
    let mut model = vec![0u8; 4 << 20];
    random_ops(d.as_ref(), &mut model, 77, 40);
    d.close().unwrap();
    drop(d);
    let d = open(i, true);
    let mut got = vec![0u8; model.len()];
    d.read(0, &mut got).unwrap();
    assert!(got == model);
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!((r.corruptions, r.leaks), (0, 0));
}

/// Writers on several threads at once (overlapping clusters included) leave the image equal to
/// a serial replay of each thread's own region, and QEMU's check clean.
#[test]
fn concurrent_writers() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t.qed");
    let raw = dir.path().join("t.raw");
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    create_image(
        "qed",
        storage(i, false, true),
        &CreateOptions {
            size: 8 << 20,
            cluster_size: Some(4096),
            ..Default::default()
        },
    )
    .unwrap();
    let d = open(i, false);
    // Thread t owns bytes whose 1000-byte block index is t mod 4: clusters are shared.
    let models: Vec<Vec<(u64, u8)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let d = d.clone();
                s.spawn(move || {
                    let mut log = Vec::new();
                    let mut x = t + 1;
                    for _ in 0..300 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let block = ((x >> 30) % 8000) / 4 * 4 + t;
                        let byte = (x >> 56) as u8 | 1;
                        d.write(block * 1000, &[byte; 1000]).unwrap();
                        log.push((block, byte));
                    }
                    log
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut model = vec![0u8; 8 << 20];
    for log in &models {
        for &(block, byte) in log {
            model[block as usize * 1000..block as usize * 1000 + 1000].fill(byte);
        }
    }
    d.close().unwrap();
    drop(d);
    ok(&run("qemu-img", &["check", i]), "check");
    std::fs::write(&raw, &model).unwrap();
    ok(
        &run("qemu-img", &["compare", "-f", "qed", "-F", "raw", i, r]),
        "compare",
    );
}

/// `create` writes the very bytes `qemu-img create` writes, for every option class.
#[test]
fn created_image_equals_qemus() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    /// Size, cluster_size, table_size, backing format.
    type Case = (u64, Option<u64>, Option<u64>, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (10 << 20, None, None, None),
        (1000, None, None, None),
        (0, None, None, None),
        (1 << 30, Some(4096), Some(16), None),
        (1 << 30, Some(1 << 20), Some(16), None),
        (0, Some(64 << 20), Some(1), None),
        (5 << 20, Some(8192), Some(8), Some("raw")),
        (5 << 20, None, Some(2), Some("qcow2")),
    ];
    for (size, cs, ts, bfmt) in cases {
        let a = dir.path().join("a.qed");
        let b = dir.path().join("b.qed");
        create_image(
            "qed",
            storage(a.to_str().unwrap(), false, true),
            &CreateOptions {
                size,
                cluster_size: cs,
                table_size: ts,
                backing_file: bfmt.map(|_| "base.raw".to_string()),
                backing_fmt: bfmt.map(String::from),
                ..Default::default()
            },
        )
        .unwrap();
        let mut o = Vec::new();
        if let Some(c) = cs {
            o.push(format!("cluster_size={c}"));
        }
        if let Some(t) = ts {
            o.push(format!("table_size={t}"));
        }
        if let Some(f) = bfmt {
            o.push(format!("backing_file=base.raw,backing_fmt={f}"));
        }
        let mut args = vec!["create", "-q", "-u", "-f", "qed"];
        let opts = o.join(",");
        if !opts.is_empty() {
            args.extend(["-o", opts.as_str()]);
        }
        let sz = size.to_string();
        args.extend([b.to_str().unwrap(), sz.as_str()]);
        ok(&run("qemu-img", &args), "create");
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{size} {cs:?} {ts:?} {bfmt:?}"
        );
    }
    // QEMU's size limit wraps to 0 for 64 MiB clusters: only empty images are accepted.
    let e = create_image(
        "qed",
        storage(dir.path().join("c.qed").to_str().unwrap(), false, true),
        &CreateOptions {
            size: 1 << 20,
            cluster_size: Some(64 << 20),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.message.ends_with("less than 0 bytes"), "{}", e.message);
}
