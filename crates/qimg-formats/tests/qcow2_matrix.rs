//! qcow2 against real qemu-img / qemu-io (skips with a printed reason when absent):
//! a compat × cluster size × refcount width matrix written by QEMU and read by the driver;
//! backing chains with copy-on-write, lazy refcounts, preallocation, check/repair, concurrency,
//! and `info` written by the driver and judged by QEMU.
mod common;
use common::{have_qemu, ok, run, serial, storage};
use qimg_core::{BlockDriver, ErrorCode, LayerStatus, RepairMode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions, Preallocation};
use std::sync::Arc;

fn open(path: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    open_driver(
        "qcow2",
        storage(path, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {path}: {}", e.message))
}

fn create(path: &str, o: &CreateOptions) {
    create_image("qcow2", storage(path, false, true), o)
        .unwrap_or_else(|e| panic!("create {path}: {}", e.message));
}

fn read_all(d: &dyn BlockDriver) -> Vec<u8> {
    let mut v = vec![0u8; d.virtual_size() as usize];
    d.read(0, &mut v).unwrap();
    v
}

/// `qemu-img check` exits 0 (clean: no corruptions, no leaks).
fn qemu_check_clean(path: &str) {
    ok("qemu-img", &["check", "-f", "qcow2", path]);
}

/// `qemu-img compare` of the image (with its backing chain) against raw bytes, and equal size.
fn qemu_compare(dir: &std::path::Path, path: &str, model: &[u8]) {
    let raw = dir.join("model.raw");
    std::fs::write(&raw, model).unwrap();
    ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            path,
            raw.to_str().unwrap(),
        ],
    );
    let info = ok("qemu-img", &["info", "--output=json", "-f", "qcow2", path]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["virtual-size"].as_u64(), Some(model.len() as u64));
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

#[test]
fn reads_qemu_images_across_the_matrix() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for cs in [512u64, 4096, 65536, 2 << 20] {
        cases.push(format!("compat=0.10,cluster_size={cs}"));
        for bits in [1, 4, 16, 64] {
            cases.push(format!("compat=1.1,cluster_size={cs},refcount_bits={bits}"));
        }
    }
    cases.push("compat=1.1,lazy_refcounts=on,cluster_size=8192".into());
    for opts in cases {
        let img = dir.path().join("q.qcow2");
        let raw = dir.path().join("q.raw");
        let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
        ok(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", &opts, i, "6M"],
        );
        ok(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x11 0 1M",
                "-c",
                "write -P 0x22 1500 70000",
                "-c",
                "write -z 8192 65536",
                "-c",
                "write -z -u 524288 131072",
                "-c",
                "discard 262144 131072",
                "-c",
                "write -P 0x33 3M 2M",
                "-c",
                "write -P 0x44 5000000 12345",
                "-c",
                "discard 4194304 1M",
                i,
            ],
        );
        ok("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", i, r]);
        let d = open(i, true);
        assert_eq!(read_all(d.as_ref()), std::fs::read(&raw).unwrap(), "{opts}");
        // Odd-sized reads across cluster boundaries agree too.
        let want = std::fs::read(&raw).unwrap();
        let mut rng = Rng(opts.len() as u64);
        for _ in 0..20 {
            let off = rng.next() % (6 << 20);
            let len = (rng.next() % 300_000).min((6 << 20) - off);
            let mut buf = vec![0u8; len as usize];
            d.read(off, &mut buf).unwrap();
            assert!(
                buf == want[off as usize..(off + len) as usize],
                "{opts} @{off}+{len}"
            );
        }
        let rep = d.check(RepairMode::None).unwrap();
        assert_eq!(
            (rep.corruptions, rep.leaks),
            (0, 0),
            "{opts}: {:?}",
            rep.messages
        );
        let qc = ok("qemu-img", &["check", "--output=json", "-f", "qcow2", i]);
        let q: serde_json::Value = serde_json::from_str(&qc).unwrap();
        assert_eq!(
            rep.image_end_offset,
            q["image-end-offset"].as_u64(),
            "{opts}"
        );
        // qemu-img leaves zero counts out of its JSON.
        let nz = |v: Option<u64>| v.filter(|&n| n != 0);
        assert_eq!(
            nz(rep.allocated_clusters),
            q["allocated-clusters"].as_u64(),
            "{opts}"
        );
        assert_eq!(
            nz(rep.total_clusters),
            q["total-clusters"].as_u64(),
            "{opts}"
        );
        assert_eq!(
            nz(rep.fragmented_clusters),
            q["fragmented-clusters"].as_u64(),
            "{opts}"
        );
    }
}

/// Apply random writes, zeroes and discards to the driver and to a byte model. `backing` is what
/// unallocated clusters show (discard on v2 or without zero flag falls through to it).
fn random_ops(
    d: &dyn BlockDriver,
    model: &mut [u8],
    backing: &[u8],
    cs: u64,
    v3: bool,
    seed: u64,
    n: usize,
) {
    let size = model.len() as u64;
    let mut rng = Rng(seed);
    for _ in 0..n {
        let off = rng.next() % size;
        let len = (rng.next() % (3 * cs + 100_000)).min(size - off);
        let byte = (rng.next() as u8) | 1;
        match rng.next() % 6 {
            0 => {
                d.write_zeroes(off, len, rng.next() & 1 == 0).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            1 => {
                d.discard(off, len).unwrap();
                let (a, b) = (off.div_ceil(cs) * cs, (off + len) / cs * cs);
                if b > a {
                    if v3 {
                        model[a as usize..b as usize].fill(0);
                    } else {
                        model[a as usize..b as usize]
                            .copy_from_slice(&backing[a as usize..b as usize]);
                    }
                }
            }
            _ => {
                d.write(off, &vec![byte; len as usize]).unwrap();
                model[off as usize..(off + len) as usize].fill(byte);
            }
        }
    }
}

#[test]
fn backing_chain_copy_on_write_passes_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (compat, cs) in [("1.1", 65536u64), ("0.10", 4096), ("1.1", 512)] {
        let size = 4u64 << 20;
        let base = dir.path().join(format!("base-{cs}.qcow2"));
        let top = dir.path().join(format!("top-{cs}.qcow2"));
        let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
        // The backing file is shorter than the overlay: reads past its end are zeros.
        ok("qemu-img", &["create", "-q", "-f", "qcow2", b, "3M"]);
        ok(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0xb1 0 3M",
                "-c",
                "write -z 1M 100k",
                b,
            ],
        );
        create(
            t,
            &CreateOptions {
                size,
                compat: Some(compat.into()),
                cluster_size: Some(cs),
                backing_file: Some(b.into()),
                backing_fmt: Some("qcow2".into()),
                ..Default::default()
            },
        );
        let bd = open(b, true);
        let mut backing = read_all(bd.as_ref());
        backing.resize(size as usize, 0);
        let d = open(t, false);
        let info = d.info().unwrap();
        assert_eq!(info.backing_file.as_deref(), Some(b));
        assert_eq!(info.backing_format.as_deref(), Some("qcow2"));
        d.set_backing(Some(bd)).unwrap();
        assert!(d.backing().is_some());
        assert_eq!(read_all(d.as_ref()), backing);
        let ext = d.block_status(0, size).unwrap();
        assert!(ext.iter().all(|e| e.status == LayerStatus::Unallocated));
        let mut model = backing.clone();
        random_ops(
            d.as_ref(),
            &mut model,
            &backing,
            cs,
            compat == "1.1",
            cs,
            60,
        );
        assert!(
            read_all(d.as_ref()) == model,
            "{compat} {cs}: driver reads back"
        );
        d.close().unwrap();
        drop(d);
        qemu_check_clean(t);
        qemu_compare(dir.path(), t, &model);
    }
}

#[test]
fn driver_images_pass_qemu_check_for_every_option() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (compat, cs, bits, lazy) in [
        ("1.1", 65536u64, 16u32, false),
        ("1.1", 65536, 1, true),
        ("1.1", 512, 2, false),
        ("1.1", 4096, 8, true),
        ("1.1", 32768, 32, false),
        ("1.1", 2 << 20, 64, false),
        ("0.10", 512, 16, false),
        ("0.10", 2 << 20, 16, false),
    ] {
        n += 1;
        let size = if cs == 2 << 20 { 24u64 << 20 } else { 5 << 20 };
        let img = dir.path().join(format!("d{n}.qcow2"));
        let i = img.to_str().unwrap();
        create(
            i,
            &CreateOptions {
                size,
                compat: Some(compat.into()),
                cluster_size: Some(cs),
                refcount_bits: Some(bits),
                lazy_refcounts: lazy,
                ..Default::default()
            },
        );
        qemu_check_clean(i);
        let d = open(i, false);
        let mut model = vec![0u8; size as usize];
        let zeros = model.clone();
        random_ops(d.as_ref(), &mut model, &zeros, cs, compat == "1.1", n, 50);
        // One large write spanning many clusters.
        d.write(cs / 2, &vec![0x6c; (1 << 20) + 3]).unwrap();
        model[(cs / 2) as usize..(cs / 2) as usize + (1 << 20) + 3].fill(0x6c);
        if lazy {
            let hdr = std::fs::read(&img).unwrap();
            assert_eq!(
                hdr[79] & 1,
                1,
                "dirty bit set while open with lazy refcounts"
            );
            assert!(d.info().unwrap().dirty);
        }
        assert!(read_all(d.as_ref()) == model);
        d.close().unwrap();
        drop(d);
        assert_eq!(
            std::fs::read(&img).unwrap()[79] & 1,
            0,
            "dirty bit cleared on close"
        );
        qemu_check_clean(i);
        qemu_compare(dir.path(), i, &model);
        let q: serde_json::Value = serde_json::from_str(&ok(
            "qemu-img",
            &["info", "--output=json", "-f", "qcow2", i],
        ))
        .unwrap();
        let d = open(i, true);
        let info = d.info().unwrap();
        assert_eq!(
            info.format_specific.unwrap(),
            q["format-specific"],
            "{compat} {bits}"
        );
        assert_eq!(info.cluster_size, q["cluster-size"].as_u64());
    }
}

#[test]
fn preallocation_modes_match_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (mode, name) in [
        (Preallocation::Metadata, "metadata"),
        (Preallocation::Falloc, "falloc"),
        (Preallocation::Full, "full"),
    ] {
        let ours = dir.path().join(format!("p-{name}.qcow2"));
        let theirs = dir.path().join(format!("q-{name}.qcow2"));
        let (o, t) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
        create(
            o,
            &CreateOptions {
                size: 3 << 20,
                preallocation: mode,
                ..Default::default()
            },
        );
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("preallocation={name}"),
                t,
                "3M",
            ],
        );
        qemu_check_clean(o);
        let map = |p: &str| -> Vec<(bool, bool, bool)> {
            let v: serde_json::Value =
                serde_json::from_str(&ok("qemu-img", &["map", "--output=json", "-f", "qcow2", p]))
                    .unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["data"].as_bool().unwrap(),
                        e["zero"].as_bool().unwrap(),
                        e["offset"].is_u64(),
                    )
                })
                .collect()
        };
        assert_eq!(map(o), map(t), "{name}: qemu-img map shape");
        let size = std::fs::metadata(&ours).unwrap().len();
        assert!(size >= 3 << 20, "{name}: file holds the data area ({size})");
        let d = open(o, false);
        assert_eq!(read_all(d.as_ref()), vec![0u8; 3 << 20]);
        d.write(100_000, &[7u8; 200_000]).unwrap();
        d.close().unwrap();
        drop(d);
        qemu_check_clean(o);
        let mut model = vec![0u8; 3 << 20];
        model[100_000..300_000].fill(7);
        qemu_compare(dir.path(), o, &model);
    }
}

#[test]
fn check_reports_and_repairs_leaks_like_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("leak.qcow2");
    let i = img.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", i, "4M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 1 0 128k", i]);
    // Leak two clusters past the end: count them in the first refcount block, grow the file.
    let mut b = std::fs::read(&img).unwrap();
    let rt = u64::from_be_bytes(b[48..56].try_into().unwrap()) as usize;
    let rb = u64::from_be_bytes(b[rt..rt + 8].try_into().unwrap()) as usize;
    let end = b.len() / 65536;
    for c in [end, end + 1] {
        b[rb + 2 * c + 1] = 1;
    }
    b.resize((end + 2) * 65536, 0);
    std::fs::write(&img, &b).unwrap();
    let q = run("qemu-img", &["check", "--output=json", "-f", "qcow2", i]);
    assert_eq!(q.status.code(), Some(3), "qemu sees leaks only");
    let q: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let d = open(i, true);
    let rep = d.check(RepairMode::None).unwrap();
    assert_eq!(rep.leaks, q["leaks"].as_u64().unwrap());
    assert_eq!(rep.corruptions, 0);
    assert!(rep
        .messages
        .contains(&format!("Leaked cluster {end} refcount=1 reference=0")));
    assert_eq!(
        d.check(RepairMode::Leaks).unwrap_err().code,
        ErrorCode::ReadOnly
    );
    drop(d);
    let d = open(i, false);
    let rep = d.check(RepairMode::Leaks).unwrap();
    assert_eq!((rep.leaks, rep.leaks_fixed), (0, 2));
    d.close().unwrap();
    drop(d);
    qemu_check_clean(i);
    // A missing reference (refcount 0 for a used cluster) is a corruption, fixed by All.
    let mut b = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    let l2 = (u64::from_be_bytes(b[l1..l1 + 8].try_into().unwrap()) & 0xff_ffff_ffff_fe00) as usize;
    let data =
        (u64::from_be_bytes(b[l2..l2 + 8].try_into().unwrap()) & 0xff_ffff_ffff_fe00) as usize;
    b[rb + 2 * (data / 65536) + 1] = 0;
    std::fs::write(&img, &b).unwrap();
    assert_eq!(
        run("qemu-img", &["check", "-f", "qcow2", i]).status.code(),
        Some(2)
    );
    let d = open(i, false);
    let rep = d.check(RepairMode::None).unwrap();
    assert!(rep.corruptions >= 1, "{:?}", rep.messages);
    assert!(rep.messages.contains(&format!(
        "ERROR cluster {} refcount=0 reference=1",
        data / 65536
    )));
    let rep = d.check(RepairMode::All).unwrap();
    assert_eq!(rep.corruptions, 0, "{:?}", rep.messages);
    assert!(rep.corruptions_fixed >= 1);
    d.close().unwrap();
    drop(d);
    qemu_check_clean(i);
}

#[test]
fn lazy_refcounts_crash_is_rebuilt_on_writable_open() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lazy.qcow2");
    let i = img.to_str().unwrap();
    create(
        i,
        &CreateOptions {
            size: 8 << 20,
            lazy_refcounts: true,
            cluster_size: Some(4096),
            ..Default::default()
        },
    );
    let d = open(i, false);
    d.write(0, &vec![9u8; 3 << 20]).unwrap();
    d.flush().unwrap();
    drop(d); // a crash: never closed, dirty bit stays set
    let hdr = std::fs::read(&img).unwrap();
    assert_eq!(hdr[79] & 1, 1);
    // Lose the refcounts the lazy image did not need to keep: zero the first refcount block.
    let mut b = hdr;
    let rt = u64::from_be_bytes(b[48..56].try_into().unwrap()) as usize;
    let rb = u64::from_be_bytes(b[rt..rt + 8].try_into().unwrap()) as usize;
    b[rb + 2..rb + 4096].fill(0);
    std::fs::write(&img, &b).unwrap();
    let ro = open(i, true);
    assert!(ro.info().unwrap().dirty);
    drop(ro);
    let d = open(i, false);
    assert!(
        !d.info().unwrap().dirty,
        "rebuilt and clean after a writable open"
    );
    d.close().unwrap();
    drop(d);
    qemu_check_clean(i);
    let mut model = vec![0u8; 8 << 20];
    model[..3 << 20].fill(9);
    qemu_compare(dir.path(), i, &model);
}

#[test]
fn concurrent_readers_and_writers() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("mt.qcow2");
    let i = img.to_str().unwrap();
    create(
        i,
        &CreateOptions {
            size: 16 << 20,
            cluster_size: Some(4096),
            ..Default::default()
        },
    );
    let d = open(i, false);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                let base = t as u64 * (4 << 20);
                for k in 0..64u64 {
                    let off = base + k * 65000;
                    let v = vec![t * 16 + (k % 16) as u8 + 1; 65000];
                    d.write(off, &v).unwrap();
                    let mut r = vec![0u8; 65000];
                    d.read(off, &mut r).unwrap();
                    assert!(r == v);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut model = vec![0u8; 16 << 20];
    for t in 0..4u8 {
        for k in 0..64u64 {
            let off = (t as u64 * (4 << 20) + k * 65000) as usize;
            model[off..off + 65000].fill(t * 16 + (k % 16) as u8 + 1);
        }
    }
    assert!(read_all(d.as_ref()) == model);
    d.close().unwrap();
    drop(d);
    qemu_check_clean(i);
    qemu_compare(dir.path(), i, &model);
}

#[test]
fn resize_grows_the_l1_table() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("grow.qcow2");
    let i = img.to_str().unwrap();
    // 512-byte clusters: one L2 table maps 32 KiB, so growing 1 MiB → 5 MiB grows the L1.
    create(
        i,
        &CreateOptions {
            size: 1 << 20,
            cluster_size: Some(512),
            ..Default::default()
        },
    );
    let d = open(i, false);
    d.write(1000, &[3u8; 5000]).unwrap();
    d.resize(5 << 20).unwrap();
    assert_eq!(d.virtual_size(), 5 << 20);
    d.write((5 << 20) - 7000, &[4u8; 7000]).unwrap();
    // Shrinking drops the data past the new end; growing again reads zeros there.
    d.resize(3 << 20).unwrap();
    d.resize(5 << 20).unwrap();
    d.close().unwrap();
    drop(d);
    qemu_check_clean(i);
    let mut model = vec![0u8; 5 << 20];
    model[1000..6000].fill(3);
    qemu_compare(dir.path(), i, &model);
}

#[test]
fn create_rejects_what_qemu_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bad.qcow2");
    let i = img.to_str().unwrap();
    let base = CreateOptions {
        size: 1 << 20,
        ..Default::default()
    };
    let cases: Vec<(CreateOptions, ErrorCode)> = vec![
        (
            CreateOptions {
                compat: Some("0.10".into()),
                lazy_refcounts: true,
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                compat: Some("0.10".into()),
                refcount_bits: Some(8),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                compat: Some("0.9".into()),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                cluster_size: Some(3000),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                cluster_size: Some(256),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                cluster_size: Some(4 << 20),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                refcount_bits: Some(3),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                refcount_bits: Some(128),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                extended_l2: true,
                cluster_size: Some(8192),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                data_file_raw: true,
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                backing_file: Some("x".repeat(1024)),
                backing_fmt: Some("raw".into()),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
        (
            CreateOptions {
                size: 1 << 62,
                cluster_size: Some(512),
                ..base.clone()
            },
            ErrorCode::InvalidArgument,
        ),
    ];
    for (o, code) in cases {
        let e = create_image("qcow2", storage(i, false, true), &o)
            .err()
            .unwrap_or_else(|| panic!("created {o:?}"));
        assert_eq!(e.code, code, "{o:?}: {}", e.message);
    }
}

/// `qemu-img map` without host offsets: (start, length, present, zero, data).
fn map_shape(path: &str) -> Vec<(u64, u64, bool, bool, bool)> {
    let v: serde_json::Value = serde_json::from_str(&ok(
        "qemu-img",
        &["map", "--output=json", "-f", "qcow2", path],
    ))
    .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["present"].as_bool().unwrap(),
                e["zero"].as_bool().unwrap(),
                e["data"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn zeroes_and_discards_map_like_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k = 65536u64;
    // (qemu-io command, driver operation)
    type Op = Box<dyn Fn(&dyn BlockDriver)>;
    let ops: Vec<(String, Op)> = vec![
        (
            format!("write -P 7 0 {}", 6 * k),
            Box::new(move |d| d.write(0, &vec![7u8; 6 * k as usize]).unwrap()),
        ),
        (
            format!("write -z {k} {k}"),
            Box::new(move |d| d.write_zeroes(k, k, false).unwrap()),
        ),
        (
            format!("write -z -u {} {k}", 2 * k),
            Box::new(move |d| d.write_zeroes(2 * k, k, true).unwrap()),
        ),
        (
            format!("discard {} {k}", 3 * k),
            Box::new(move |d| d.discard(3 * k, k).unwrap()),
        ),
        (
            format!("write -z {} {}", 8 * k, 2 * k),
            Box::new(move |d| d.write_zeroes(8 * k, 2 * k, false).unwrap()),
        ),
        (
            format!("discard {} {k}", 12 * k),
            Box::new(move |d| d.discard(12 * k, k).unwrap()),
        ),
        (
            "write -z 300000 1000".to_string(),
            Box::new(|d| d.write_zeroes(300_000, 1000, false).unwrap()),
        ),
    ];
    for compat in ["1.1", "0.10"] {
        let (q, m) = (dir.path().join("q.qcow2"), dir.path().join("m.qcow2"));
        let (q, m) = (q.to_str().unwrap(), m.to_str().unwrap());
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
                q,
                "1M",
            ],
        );
        let mut args = vec!["-f".to_string(), "qcow2".to_string()];
        for (c, _) in &ops {
            args.push("-c".into());
            args.push(c.clone());
        }
        args.push(q.into());
        ok(
            "qemu-io",
            &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        );
        create(
            m,
            &CreateOptions {
                size: 1 << 20,
                compat: Some(compat.into()),
                ..Default::default()
            },
        );
        let d = open(m, false);
        for (_, op) in &ops {
            op(d.as_ref());
        }
        d.close().unwrap();
        drop(d);
        assert_eq!(map_shape(m), map_shape(q), "compat={compat}");
        qemu_check_clean(m);
        ok("qemu-img", &["compare", "-f", "qcow2", "-F", "qcow2", m, q]);
    }
}
