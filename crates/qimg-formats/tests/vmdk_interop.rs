//! vmdk against qemu-img 10 (and 7-Zip, libvmdk): creation of every subformat and option with
//! the same `info` as QEMU's, images each side writes read back identically on the other,
//! VMware's streamOptimized layout, the sample images, and a model-based random write run.
#[path = "common/blockfmt.rs"]
mod blockfmt;
mod common;
use blockfmt::*;
use common::{have_qemu, run, serial, storage};
use qimg_core::{BlockDriver, RepairMode};
use qimg_formats::vmdk::driver::path_combine;
use qimg_formats::{open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

const SUBFORMATS: [&str; 5] = [
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
];

/// Open a vmdk with its extent files attached (what the graph builder does after the gate).
fn open_vmdk(path: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    let d = open_driver(
        "vmdk",
        storage(path, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap();
    let files: Vec<_> = d
        .extent_files()
        .iter()
        .map(|f| storage(&path_combine(path, f), read_only, false))
        .collect();
    if !files.is_empty() {
        d.attach_extents(files).unwrap();
    }
    d
}

fn opts(size: u64, sub: &str) -> CreateOptions {
    CreateOptions {
        size,
        subformat: Some(sub.into()),
        ..Default::default()
    }
}

/// qemu-img info JSON without what differs by design (random CID, names, host sizes).
fn info_cmp(p: &str) -> serde_json::Value {
    let mut i = qemu_info(p, "vmdk");
    let o = i.as_object_mut().unwrap();
    for k in ["filename", "children", "actual-size"] {
        o.remove(k);
    }
    let d = o["format-specific"]["data"].as_object_mut().unwrap();
    d.remove("cid");
    for e in d["extents"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("filename");
    }
    i
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i / 512) as u8).wrapping_mul(31) ^ seed ^ (i as u8))
        .collect()
}

#[test]
fn create_every_subformat_like_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in SUBFORMATS {
        for size in [1u64 << 20, (5u64 << 30) + 4096] {
            let o = dir.path().join(format!("o-{sub}.vmdk"));
            let t = dir.path().join(format!("t-{sub}.vmdk"));
            let (o, t) = (o.to_str().unwrap(), t.to_str().unwrap());
            qimg_create("vmdk", o, opts(size, sub));
            ok(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "vmdk",
                    "-o",
                    &format!("subformat={sub}"),
                    t,
                    &size.to_string(),
                ],
            );
            assert_eq!(info_cmp(o), info_cmp(t), "{sub} {size}: info");
            ok("qemu-img", &["check", "-f", "vmdk", o]);
            let d = open_vmdk(o, true);
            assert_eq!(d.virtual_size(), size.next_multiple_of(512));
            let qi = qemu_info(o, "vmdk");
            let ours = d.info().unwrap().format_specific.unwrap();
            let theirs = qi["format-specific"].clone();
            // Extent file names: QEMU prints them as it opened them (joined to the directory).
            assert_eq!(
                ours, theirs,
                "{sub} {size}: format-specific, field by field"
            );
            if sub != "streamOptimized" {
                // Byte-identical to QEMU's but for the CID and the names. The CID is printed
                // without leading zeros (as QEMU does), so an embedded descriptor's zero padding
                // is one byte longer or shorter depending on the random CID: padding at the start
                // of a line is not compared.
                let strip = |p: &str| {
                    let b = std::fs::read(p).unwrap();
                    let s = String::from_utf8_lossy(&b).to_string();
                    s.lines()
                        .filter(|l| !l.starts_with("CID="))
                        .map(|l| {
                            l.trim_start_matches('\0')
                                .replace("o-", "")
                                .replace("t-", "")
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_eq!(strip(o), strip(t), "{sub}: same descriptor and layout");
            }
        }
    }
}

#[test]
fn options_match_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, CreateOptions)> = vec![
        (
            "zeroed_grain=on",
            CreateOptions {
                zeroed_grain: true,
                ..opts(64 << 20, "monolithicSparse")
            },
        ),
        (
            "compat6=on",
            CreateOptions {
                compat6: true,
                ..opts(64 << 20, "monolithicSparse")
            },
        ),
        (
            "hwversion=undefined",
            CreateOptions {
                hwversion: Some("undefined".into()),
                ..opts(64 << 20, "monolithicSparse")
            },
        ),
        (
            "adapter_type=lsilogic",
            CreateOptions {
                adapter_type: Some("lsilogic".into()),
                ..opts(64 << 20, "monolithicFlat")
            },
        ),
        (
            "adapter_type=buslogic,toolsversion=42",
            CreateOptions {
                adapter_type: Some("buslogic".into()),
                toolsversion: Some("42".into()),
                ..opts(3 << 30, "twoGbMaxExtentSparse")
            },
        ),
        (
            "adapter_type=legacyESX,zeroed_grain=on",
            CreateOptions {
                adapter_type: Some("legacyESX".into()),
                zeroed_grain: true,
                ..opts(64 << 20, "twoGbMaxExtentSparse")
            },
        ),
    ];
    for (q, co) in cases {
        let o = dir.path().join("o.vmdk");
        let t = dir.path().join("t.vmdk");
        let (o, t) = (o.to_str().unwrap(), t.to_str().unwrap());
        let sub = co.subformat.clone().unwrap();
        let size = co.size;
        qimg_create("vmdk", o, co);
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vmdk",
                "-o",
                &format!("{q},subformat={sub}"),
                t,
                &size.to_string(),
            ],
        );
        assert_eq!(info_cmp(o), info_cmp(t), "{q}");
        let ddb = |p: &str| -> Vec<String> {
            let b = std::fs::read(p).unwrap();
            String::from_utf8_lossy(&b[..b.len().min(16384)])
                .lines()
                .filter(|l| l.starts_with("ddb."))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(ddb(o), ddb(t), "{q}: disk database");
        let (a, b) = (std::fs::read(o).unwrap(), std::fs::read(t).unwrap());
        if sub == "monolithicSparse" {
            assert_eq!(a[..512], b[..512], "{q}: header");
        }
        ok("qemu-img", &["check", "-f", "vmdk", o]);
    }
    // compat6 with hwversion: refused as QEMU refuses it, with its message.
    let e = qimg_formats::create_image(
        "vmdk",
        storage(dir.path().join("x.vmdk").to_str().unwrap(), false, true),
        &CreateOptions {
            compat6: true,
            hwversion: Some("7".into()),
            ..opts(1 << 20, "monolithicSparse")
        },
    )
    .unwrap_err();
    assert_eq!(e.message, "compat6 cannot be enabled with hwversion set");
    assert_eq!(e.code, qimg_core::ErrorCode::InvalidArgument);
}

#[test]
fn both_ways_with_qemu_for_every_subformat() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = (4u64 << 30) + (3 << 20);
    let src = dir.path().join("src.raw");
    let src = src.to_str().unwrap();
    // A sparse raw source: data near the start, across the 2 GiB extent boundary, at the end.
    {
        let f = std::fs::File::create(src).unwrap();
        f.set_len(size).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&pattern(3 << 20, 1), 4096).unwrap();
        f.write_all_at(&pattern(1 << 20, 2), (2 << 30) - (300 << 10))
            .unwrap();
        f.write_all_at(&pattern(7000, 3), size - 7000).unwrap();
    }
    let ranges = [
        (0u64, 4 << 20),
        ((2 << 30) - (1 << 20), 3 << 20),
        (size - (1 << 20), 1 << 20),
    ];
    let read = |d: &dyn BlockDriver| -> Vec<Vec<u8>> {
        ranges
            .iter()
            .map(|&(o, n)| {
                let mut b = vec![0u8; n];
                d.read(o, &mut b).unwrap();
                b
            })
            .collect()
    };
    let raw = open_driver(
        "raw",
        storage(src, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let want = read(raw.as_ref());
    for sub in SUBFORMATS {
        // QEMU writes, qimg reads.
        let q = dir.path().join(format!("q-{sub}.vmdk"));
        let q = q.to_str().unwrap();
        ok(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                &format!("subformat={sub}"),
                src,
                q,
            ],
        );
        let d = open_vmdk(q, true);
        assert!(read(d.as_ref()) == want, "{sub}: qemu → qimg");
        assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
        drop(d);
        // qimg writes (through the copy loop, as convert does), QEMU reads.
        let o = dir.path().join(format!("o-{sub}.vmdk"));
        let o = o.to_str().unwrap();
        qimg_create("vmdk", o, opts(size, sub));
        let d = open_vmdk(o, false);
        let copts = qimg_core::copy::CopyOptions {
            sparse_size: 4096,
            target_zeroed: true,
            layers: None,
            compress: false,
            compress_level: None,
            compress_threads: 1,
        };
        qimg_core::copy::copy_range(raw.as_ref(), d.as_ref(), 0, size, 0, &copts).unwrap();
        d.close().unwrap();
        drop(d);
        ok("qemu-img", &["check", "-f", "vmdk", o]);
        ok("qemu-img", &["compare", "-f", "raw", "-F", "vmdk", src, o]);
        let d = open_vmdk(o, true);
        assert!(read(d.as_ref()) == want, "{sub}: qimg reads its own");
    }
}

#[test]
fn stream_optimized_in_vmware_layout_read_by_7zip_and_libvmdk() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("s.vmdk");
    let o = o.to_str().unwrap();
    let size = 40u64 << 20;
    qimg_create("vmdk", o, opts(size, "streamOptimized"));
    let d = open_vmdk(o, false);
    let mut model = vec![0u8; size as usize];
    // Whole grains compressed on several threads, one compressed grain at a time (convert -c),
    // and partial grains completed by later writes.
    let a = pattern(5 << 20, 7);
    d.write(1 << 20, &a).unwrap();
    model[1 << 20..(1 << 20) + a.len()].copy_from_slice(&a);
    let g = pattern(65536, 9);
    d.write_compressed(33 << 20, &g, Some(1)).unwrap();
    model[33 << 20..(33 << 20) + 65536].copy_from_slice(&g);
    let p = pattern(40000, 11);
    d.write((36 << 20) + 30000, &p).unwrap();
    model[(36 << 20) + 30000..(36 << 20) + 70000].copy_from_slice(&p);
    assert!(read_all(d.as_ref()) == model, "reads before flush");
    d.close().unwrap();
    drop(d);
    // VMware's layout: the header says "directory at the end", and the footer says where.
    let b = std::fs::read(o).unwrap();
    assert_eq!(u64::from_le_bytes(b[56..64].try_into().unwrap()), u64::MAX);
    let n = b.len();
    assert_eq!(
        u32::from_le_bytes(b[n - 1536 + 12..n - 1536 + 16].try_into().unwrap()),
        3,
        "footer marker"
    );
    assert_eq!(&b[n - 1024..n - 1020], b"KDMV");
    assert!(b[n - 512..].iter().all(|&x| x == 0), "end-of-stream marker");
    ok("qemu-img", &["check", "-f", "vmdk", o]);
    assert!(qemu_raw(o, "vmdk") == model, "qemu reads the VMware layout");
    let x = dir.path().join("x.raw");
    let x = x.to_str().unwrap();
    if common::run("7zz", &["--help"]).status.success() {
        let out = run("sh", &["-c", &format!("7zz e -so -tVMDK '{o}' > '{x}'")]);
        assert!(
            out.status.success(),
            "7zz: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(x).unwrap() == model,
            "7-Zip reads what qimg wrote"
        );
    } else {
        eprintln!("SKIP: 7zz is not installed (apt-get install 7zip)");
    }
    let py = "import pyvmdk,sys\nh=pyvmdk.handle()\nh.open(sys.argv[1])\nh.open_extent_data_files()\nsys.stdout.buffer.write(h.read_buffer(h.get_media_size()))\n";
    if run("/usr/bin/python3", &["-c", "import pyvmdk"])
        .status
        .success()
    {
        let out = run("/usr/bin/python3", &["-c", py, o]);
        assert!(
            out.status.success(),
            "pyvmdk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == model, "libvmdk reads what qimg wrote");
    } else {
        eprintln!("SKIP: python3-libvmdk is not installed");
    }
    // Reopened for writing, a finished stream takes new grains and stays valid.
    let d = open_vmdk(o, false);
    let q = pattern(65536, 13);
    d.write(20 << 20, &q).unwrap();
    model[20 << 20..(20 << 20) + 65536].copy_from_slice(&q);
    assert!(
        d.write(1 << 20, &q).is_err(),
        "allocated grains of a stream are not rewritten"
    );
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", "-f", "vmdk", o]);
    assert!(qemu_raw(o, "vmdk") == model, "after appending");
}

#[test]
fn backing_chain_with_parent_cid() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vmdk");
    let top = dir.path().join("top.vmdk");
    let (base, top) = (base.to_str().unwrap(), top.to_str().unwrap());
    ok("qemu-img", &["create", "-q", "-f", "vmdk", base, "8M"]);
    ok("qemu-io", &["-f", "vmdk", "-c", "write -P 0x55 0 8M", base]);
    qimg_create(
        "vmdk",
        top,
        CreateOptions {
            backing_file: Some("base.vmdk".into()),
            backing_fmt: Some("vmdk".into()),
            ..opts(8 << 20, "monolithicSparse")
        },
    );
    let qi = qemu_info(top, "vmdk");
    let bi = qemu_info(base, "vmdk");
    assert_eq!(
        qi["format-specific"]["data"]["parent-cid"],
        bi["format-specific"]["data"]["cid"]
    );
    assert_eq!(qi["backing-filename"], "base.vmdk");
    let d = open_vmdk(top, false);
    let b = open_vmdk(base, true);
    d.set_backing(Some(b)).unwrap();
    d.write(1000, &[0x66; 3000]).unwrap();
    d.write_zeroes(5 << 20, 70000, false).unwrap();
    let mut want = vec![0x55u8; 8 << 20];
    want[1000..4000].fill(0x66);
    want[5 << 20..(5 << 20) + 70000].fill(0);
    assert!(read_all(d.as_ref()) == want);
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", "-f", "vmdk", top]);
    assert!(
        qemu_raw(top, "vmdk") == want,
        "qemu reads the child over its base"
    );
    let e = qimg_formats::create_image(
        "vmdk",
        storage(dir.path().join("y.vmdk").to_str().unwrap(), false, true),
        &CreateOptions {
            backing_file: Some("base.vmdk".into()),
            backing_fmt: Some("qcow2".into()),
            ..opts(8 << 20, "monolithicSparse")
        },
    );
    assert!(e.is_err(), "a non-vmdk backing format is refused");
    // A child QEMU creates and writes reads the same in qimg.
    let qtop = dir.path().join("qtop.vmdk");
    let qtop = qtop.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            qtop,
        ],
    );
    ok(
        "qemu-io",
        &["-f", "vmdk", "-c", "write -P 0x67 100k 300k", qtop],
    );
    let d = open_vmdk(qtop, true);
    d.set_backing(Some(open_vmdk(base, true))).unwrap();
    assert!(
        read_all(d.as_ref()) == qemu_raw(qtop, "vmdk"),
        "qemu's child over its base"
    );
    drop(d);
    // Writing the parent gives it a new CID: the child no longer reads through (as in QEMU).
    let b = open_vmdk(base, false);
    b.write(0, &[1; 512]).unwrap();
    b.close().unwrap();
    drop(b);
    let q = run("qemu-io", &["-f", "vmdk", "-c", "read 6M 4k", top]);
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("read failed"),
        "qemu refuses too"
    );
    let d = open_vmdk(top, true);
    d.set_backing(Some(open_vmdk(base, true))).unwrap();
    let mut buf = vec![0u8; 4096];
    d.read(0, &mut buf[..512]).unwrap();
    let e = d.read(6 << 20, &mut buf).unwrap_err();
    assert_eq!(e.code, qimg_core::ErrorCode::Corrupt, "{}", e.message);
}

#[test]
fn model_random_writes_then_qemu_check_and_compare() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (seed, zg) in [(1u64, false), (2, true), (3, false)] {
        let p = dir.path().join("m.vmdk");
        let p = p.to_str().unwrap();
        qimg_create(
            "vmdk",
            p,
            CreateOptions {
                zeroed_grain: zg,
                ..opts(9 << 20, "monolithicSparse")
            },
        );
        let model = model_run("vmdk", p, seed, 60);
        ok("qemu-img", &["check", "-f", "vmdk", p]);
        let raw = format!("{p}.model");
        std::fs::write(&raw, &model).unwrap();
        ok("qemu-img", &["compare", "-f", "vmdk", "-F", "raw", p, &raw]);
        let d = qimg_open("vmdk", p, true);
        assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
    }
}

#[test]
fn independent_readers_agree_on_every_subformat_qimg_writes() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let py_ok = run("/usr/bin/python3", &["-c", "import pyvmdk"])
        .status
        .success();
    let z_ok = run("7zz", &["i"]).status.success();
    if !py_ok {
        eprintln!("SKIP: python3-libvmdk is not installed (test/peers/install.sh)");
    }
    if !z_ok {
        eprintln!("SKIP: 7zz is not installed (apt-get install 7zip)");
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 24u64 << 20;
    let mut model = vec![0u8; size as usize];
    let a = pattern(3 << 20, 21);
    model[(5 << 20) + 512..(5 << 20) + 512 + a.len()].copy_from_slice(&a);
    let b = pattern(70000, 22);
    model[(size as usize) - 70000..].copy_from_slice(&b);
    for sub in SUBFORMATS {
        let o = dir.path().join(format!("r-{sub}.vmdk"));
        let o = o.to_str().unwrap();
        qimg_create("vmdk", o, opts(size, sub));
        let d = open_vmdk(o, false);
        d.write((5 << 20) + 512, &a).unwrap();
        d.write(size - 70000, &b).unwrap();
        d.close().unwrap();
        drop(d);
        assert!(qemu_raw(o, "vmdk") == model, "{sub}: qemu-img");
        if py_ok {
            let py = "import pyvmdk,sys\nh=pyvmdk.handle()\nh.open(sys.argv[1])\nh.open_extent_data_files()\nsys.stdout.buffer.write(h.read_buffer(h.get_media_size()))\n";
            let out = run("/usr/bin/python3", &["-c", py, o]);
            assert!(
                out.status.success(),
                "{sub}: pyvmdk: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.stdout == model, "{sub}: libvmdk reads what qimg wrote");
        }
        if z_ok && (sub == "monolithicSparse" || sub == "streamOptimized") {
            let x = format!("{o}.7z.raw");
            let out = run("sh", &["-c", &format!("7zz e -so -tVMDK '{o}' > '{x}'")]);
            assert!(out.status.success(), "{sub}: 7zz");
            assert!(
                std::fs::read(&x).unwrap() == model,
                "{sub}: 7-Zip reads what qimg wrote"
            );
        }
    }
}

#[test]
fn zeroed_grains_both_ways() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.vmdk");
    let p = p.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "zeroed_grain=on",
            p,
            "4M",
        ],
    );
    ok(
        "qemu-io",
        &[
            "-f",
            "vmdk",
            "-c",
            "write -P 0x77 0 4M",
            "-c",
            "write -z 64k 128k",
            p,
        ],
    );
    let d = open_vmdk(p, false);
    let mut want = vec![0x77u8; 4 << 20];
    want[65536..196608].fill(0);
    assert!(
        read_all(d.as_ref()) == want,
        "qemu's zeroed grains read as zeros"
    );
    d.write_zeroes(1 << 20, 1 << 20, false).unwrap();
    want[1 << 20..2 << 20].fill(0);
    let z = d.block_status(1 << 20, 1 << 20).unwrap();
    assert!(z
        .iter()
        .all(|e| e.status == qimg_core::LayerStatus::Zero { host_offset: None }));
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", "-f", "vmdk", p]);
    assert!(
        qemu_raw(p, "vmdk") == want,
        "qimg's zeroed grains read as zeros in qemu"
    );
    let m = ok("qemu-img", &["map", "--output=json", "-f", "vmdk", p]);
    assert!(m.contains(r#""start": 1048576, "length": 1048576, "depth": 0, "present": true, "zero": true, "data": false"#), "{m}");
}

/// Power cuts at every flush boundary (and 0–3 writes past it) of allocating writes into a
/// monolithicSparse image: qemu-img check stays clean (an unreferenced grain at worst, which
/// VMDK does not count) and every range reads old or new contents in qimg and QEMU alike.
#[test]
fn power_cuts_leave_a_clean_sparse_image() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("crash.vmdk");
    let p = p.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "vmdk", p, "8M"]);
    ok("qemu-io", &["-f", "vmdk", "-c", "write -P 1 0 1M", p]);
    let orig = std::fs::read(p).unwrap();
    let op = |d: &dyn BlockDriver| {
        let _ = d.write(512 << 10, &[2; 2 << 20]);
        let _ = d.flush();
        let _ = d.write(6 << 20, &[3; 4096]);
    };
    let total = crash_run("vmdk", p, &orig, usize::MAX, 0, &op);
    assert!(total >= 2);
    let mut old_img = vec![0u8; 8 << 20];
    old_img[..1 << 20].fill(1);
    let mut new_img = old_img.clone();
    new_img[512 << 10..(512 << 10) + (2 << 20)].fill(2);
    new_img[6 << 20..(6 << 20) + 4096].fill(3);
    for k in 0..=total {
        for j in [0, 1, 2, 3, usize::MAX] {
            crash_run("vmdk", p, &orig, k, j, &op);
            ok("qemu-img", &["check", "-f", "vmdk", p]);
            let ours = read_all(qimg_open("vmdk", p, true).as_ref());
            let theirs = qemu_raw(p, "vmdk");
            assert!(ours == theirs, "cut at {k}+{j}: qimg and QEMU differ");
            // Every byte reads as before the run or as written by it, never anything else.
            let bad = ours
                .iter()
                .enumerate()
                .position(|(i, &b)| b != old_img[i] && b != new_img[i]);
            assert!(
                bad.is_none(),
                "cut at {k}+{j}: byte {bad:?} is neither old nor new"
            );
        }
    }
}

#[test]
fn appending_to_qemus_stream_layout() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.raw");
    let src = src.to_str().unwrap();
    let mut model = vec![0u8; 8 << 20];
    model[..1 << 20].copy_from_slice(&pattern(1 << 20, 31));
    std::fs::write(src, &model).unwrap();
    let p = dir.path().join("q.vmdk");
    let p = p.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            src,
            p,
        ],
    );
    let d = open_vmdk(p, false);
    assert!(d.compressed_cluster_size() == Some(65536));
    let g = pattern(200000, 32);
    d.write(3 << 20, &g).unwrap();
    model[3 << 20..(3 << 20) + g.len()].copy_from_slice(&g);
    assert!(
        d.write(0, &g[..4096]).is_err(),
        "QEMU's rule: no rewriting a stream's grain"
    );
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", "-f", "vmdk", p]);
    assert!(
        qemu_raw(p, "vmdk") == model,
        "qemu reads grains qimg appended to its stream"
    );
    assert!(read_all(open_vmdk(p, true).as_ref()) == model);
}
