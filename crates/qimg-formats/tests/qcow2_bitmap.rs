//! qcow2 persistent dirty bitmaps against qemu-img / qemu-io (skips with a printed reason when
//! absent): bitmaps QEMU made are listed, read and checked like qemu-img does; bitmaps qimg
//! changes pass `qemu-img check` and list identically; writes through qimg set the bits QEMU's
//! own writes set; hostile directories give typed errors.
mod common;
use common::{have_qemu, ok, run, serial, storage};
use qimg_core::{BitmapAction, BitmapInfo, BlockDriver, ErrorCode, RepairMode};
use qimg_formats::{open_driver, OpenOptions};
use std::sync::Arc;

fn open(path: &str, rw: bool) -> qimg_core::Result<Arc<dyn BlockDriver>> {
    open_driver(
        "qcow2",
        storage(path, !rw, false),
        &OpenOptions {
            read_only: !rw,
            ..Default::default()
        },
    )
}

fn qemu_bitmaps(path: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["info", "-U", "--output=json", path])).unwrap();
    v["format-specific"]["data"]["bitmaps"].clone()
}

fn qemu_check_clean(path: &str) -> serde_json::Value {
    let o = run("qemu-img", &["check", "--output=json", path]);
    assert!(
        o.status.success(),
        "qemu-img check {path}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// An image with an enabled bitmap `b1` (default granularity) and a disabled `b2` (128 KiB),
/// written by qemu-io so `b1` has bits set.
fn qemu_image(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(name).to_str().unwrap().to_string();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", &p, "64M"]);
    ok("qemu-img", &["bitmap", "--add", &p, "b1"]);
    ok(
        "qemu-img",
        &["bitmap", "--add", "-g", "128k", "--disable", &p, "b2"],
    );
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write 0 100k", "-c", "write 5M 4k", &p],
    );
    p
}

#[test]
fn lists_reads_and_checks_qemu_bitmaps() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = qemu_image(dir.path(), "a.qcow2");
    let d = open(&p, false).unwrap();
    let list = d.bitmaps().unwrap();
    assert_eq!(
        list,
        vec![
            BitmapInfo {
                name: "b1".into(),
                granularity: 65536,
                auto: true,
                in_use: false
            },
            BitmapInfo {
                name: "b2".into(),
                granularity: 131072,
                auto: false,
                in_use: false
            },
        ]
    );
    let info = d.info().unwrap().format_specific.unwrap();
    assert_eq!(info["data"]["bitmaps"], qemu_bitmaps(&p));
    assert_eq!(
        d.bitmap_read("b1").unwrap().ranges(),
        vec![(0, 128 << 10), (5 << 20, 64 << 10)]
    );
    assert!(d.bitmap_read("b2").unwrap().ranges().is_empty());
    let r = d.check(RepairMode::None).unwrap();
    let q = qemu_check_clean(&p);
    assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
    assert_eq!(r.allocated_clusters, q["allocated-clusters"].as_u64());
    assert_eq!(r.image_end_offset, q["image-end-offset"].as_u64());
    d.close().unwrap();
    drop(d);
}

#[test]
fn bitmap_actions_match_qemu_img() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = qemu_image(dir.path(), "ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    let theirs = theirs.to_str().unwrap();
    std::fs::copy(&ours, theirs).unwrap();
    let d = open(&ours, true).unwrap();
    let src = d.bitmap_read("b1").unwrap();
    d.bitmap_apply(&[
        BitmapAction::Add {
            name: "n1".into(),
            granularity: Some(1 << 20),
        },
        BitmapAction::Merge {
            name: "n1".into(),
            source: src,
        },
        BitmapAction::Disable("n1".into()),
        BitmapAction::Enable("b2".into()),
        BitmapAction::Clear("b1".into()),
        BitmapAction::Add {
            name: "gone".into(),
            granularity: None,
        },
        BitmapAction::Remove("gone".into()),
    ])
    .unwrap();
    let e = d
        .bitmap_apply(&[BitmapAction::Clear("nope".into())])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.message, "Dirty bitmap 'nope' not found");
    let e = d
        .bitmap_apply(&[BitmapAction::Add {
            name: "b1".into(),
            granularity: None,
        }])
        .unwrap_err();
    assert_eq!(e.message, "Bitmap already exists: b1");
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["bitmap", "--add", "-g", "1M", theirs, "n1"]);
    ok(
        "qemu-img",
        &["bitmap", "--merge", "b1", "--disable", theirs, "n1"],
    );
    ok("qemu-img", &["bitmap", "--enable", theirs, "b2"]);
    ok("qemu-img", &["bitmap", "--clear", theirs, "b1"]);
    qemu_check_clean(&ours);
    assert_eq!(qemu_bitmaps(&ours), qemu_bitmaps(theirs));
    let (a, b) = (open(&ours, false).unwrap(), open(theirs, false).unwrap());
    for n in ["b1", "b2", "n1"] {
        assert_eq!(a.bitmap_read(n).unwrap(), b.bitmap_read(n).unwrap(), "{n}");
    }
    assert_eq!(
        a.bitmap_read("n1").unwrap().ranges(),
        vec![(0, 1 << 20), (5 << 20, 1 << 20)]
    );
    // Removing every bitmap drops the extension and the autoclear bit; nothing leaks.
    drop((a, b));
    let d = open(&ours, true).unwrap();
    for n in ["b1", "b2", "n1"] {
        d.bitmap_apply(&[BitmapAction::Remove(n.into())]).unwrap();
    }
    d.close().unwrap();
    drop(d);
    qemu_check_clean(&ours);
    assert!(qemu_bitmaps(&ours).is_null());
}

#[test]
fn writes_are_tracked_like_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = qemu_image(dir.path(), "ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    let theirs = theirs.to_str().unwrap();
    std::fs::copy(&ours, theirs).unwrap();
    let d = open(&ours, true).unwrap();
    // While open, the enabled bitmap is marked in use on disk, as QEMU does.
    assert_eq!(
        qemu_bitmaps(&ours)[0]["flags"],
        serde_json::json!(["in-use", "auto"])
    );
    d.write(10 << 20, &vec![7u8; 3000]).unwrap();
    d.write((20 << 20) - 512, &[1u8; 1024]).unwrap();
    d.write_zeroes(30 << 20, 200 << 10, true).unwrap();
    d.discard(40 << 20, 1 << 20).unwrap();
    d.close().unwrap();
    drop(d);
    ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 7 10M 3000",
            "-c",
            "write -P 1 20971008 1024",
            "-c",
            "write -z -u 30M 200k",
            "-c",
            "discard 40M 1M",
            theirs,
        ],
    );
    qemu_check_clean(&ours);
    assert_eq!(qemu_bitmaps(&ours), qemu_bitmaps(theirs));
    let (a, b) = (open(&ours, false).unwrap(), open(theirs, false).unwrap());
    for n in ["b1", "b2"] {
        assert_eq!(a.bitmap_read(n).unwrap(), b.bitmap_read(n).unwrap(), "{n}");
    }
    drop((a, b));
    // QEMU loads what qimg stored: it converts the bitmaps.
    let out = dir.path().join("copy.qcow2");
    ok(
        "qemu-img",
        &[
            "convert",
            "--bitmaps",
            "-O",
            "qcow2",
            &ours,
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(qemu_bitmaps(out.to_str().unwrap()), qemu_bitmaps(theirs));
}

#[test]
fn inconsistent_bitmaps_are_kept_and_refused() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = qemu_image(dir.path(), "a.qcow2");
    set_flags(&p, 0, 3);
    let d = open(&p, true).unwrap();
    d.write(0, &[1u8; 512]).unwrap();
    let e = d
        .bitmap_apply(&[BitmapAction::Clear("b1".into())])
        .unwrap_err();
    assert!(e
        .message
        .starts_with("Bitmap 'b1' is inconsistent and cannot be used"));
    // As qemu-img resize: an inconsistent bitmap blocks a resize.
    let e = d.resize(128 << 20).unwrap_err();
    assert!(
        e.message.starts_with("Bitmap 'b1' is inconsistent"),
        "{}",
        e.message
    );
    d.close().unwrap();
    drop(d);
    qemu_check_clean(&p);
    assert_eq!(
        qemu_bitmaps(&p)[0]["flags"],
        serde_json::json!(["in-use", "auto"])
    );
    let d = open(&p, true).unwrap();
    d.bitmap_apply(&[BitmapAction::Remove("b1".into())])
        .unwrap();
    d.close().unwrap();
    drop(d);
    qemu_check_clean(&p);
    assert_eq!(qemu_bitmaps(&p).as_array().unwrap().len(), 1);
}

/// Offset of the bitmaps extension body in the header (v3, header_length 112).
fn ext_offset(img: &[u8]) -> usize {
    let mut off = 112;
    loop {
        let ty = u32::from_be_bytes(img[off..off + 4].try_into().unwrap());
        let len = u32::from_be_bytes(img[off + 4..off + 8].try_into().unwrap()) as usize;
        if ty == 0x2385_2875 {
            return off + 8;
        }
        assert_ne!(ty, 0, "no bitmaps extension");
        off += 8 + len.div_ceil(8) * 8;
    }
}

fn dir_offset(img: &[u8]) -> usize {
    let e = ext_offset(img);
    u64::from_be_bytes(img[e + 16..e + 24].try_into().unwrap()) as usize
}

fn set_flags(path: &str, entry_off: usize, flags: u32) {
    let mut img = std::fs::read(path).unwrap();
    let d = dir_offset(&img) + entry_off;
    img[d + 12..d + 16].copy_from_slice(&flags.to_be_bytes());
    std::fs::write(path, img).unwrap();
}

#[test]
fn hostile_bitmap_directories() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = qemu_image(dir.path(), "base.qcow2");
    let img = std::fs::read(&base).unwrap();
    let (e, d) = (ext_offset(&img), dir_offset(&img));
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let at = |o: usize, v: Vec<u8>| -> Patch {
        Box::new(move |b: &mut Vec<u8>| b[o..o + v.len()].copy_from_slice(&v))
    };
    let cases: Vec<(&str, Patch, ErrorCode)> = vec![
        (
            "zero bitmaps",
            at(e, 0u32.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "65536 bitmaps",
            at(e, 65536u32.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "reserved32",
            at(e + 4, 1u32.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "directory > 64 MiB",
            at(e + 8, (64u64 << 20 | 1).to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "directory unaligned",
            at(e + 16, (d as u64 + 8).to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "directory outside file",
            at(e + 16, (1u64 << 40).to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "more entries than nb_bitmaps",
            at(e, 1u32.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "granularity bits 8",
            at(d + 17, vec![8]),
            ErrorCode::Corrupt,
        ),
        (
            "granularity bits 32",
            at(d + 17, vec![32]),
            ErrorCode::Corrupt,
        ),
        ("type 2", at(d + 16, vec![2]), ErrorCode::Corrupt),
        (
            "reserved flag",
            at(d + 12, 8u32.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "name 1024 bytes",
            at(d + 18, 1024u16.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "table size mismatch",
            at(d + 8, 2u32.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "table offset unaligned",
            at(d + 7, vec![8]),
            ErrorCode::Corrupt,
        ),
        (
            "table offset 0",
            at(d, 0u64.to_be_bytes().to_vec()),
            ErrorCode::Corrupt,
        ),
        (
            "extra data, not compatible",
            at(d + 20, 8u32.to_be_bytes().to_vec()),
            ErrorCode::Unsupported,
        ),
    ];
    let p = dir.path().join("h.qcow2");
    let p = p.to_str().unwrap();
    for (what, patch, code) in cases {
        let mut b = img.clone();
        patch(&mut b);
        std::fs::write(p, &b).unwrap();
        let err = open(p, false)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert_eq!(err.code, code, "{what}: {}", err.message);
        // QEMU refuses these images too.
        assert!(
            !run("qemu-img", &["info", p]).status.success(),
            "{what}: qemu opened it"
        );
    }
    // A table entry with reserved bits: the image opens, its bits do not load.
    let mut b = img.clone();
    let t = u64::from_be_bytes(b[d..d + 8].try_into().unwrap()) as usize;
    b[t + 7] |= 0x02;
    std::fs::write(p, &b).unwrap();
    let drv = open(p, false).unwrap();
    assert_eq!(drv.bitmap_read("b1").unwrap_err().code, ErrorCode::Corrupt);
    // With the autoclear bit clear, the extension is ignored, as in QEMU.
    let mut b = img.clone();
    b[95] &= !1;
    b[e..e + 4].copy_from_slice(&0u32.to_be_bytes());
    std::fs::write(p, &b).unwrap();
    assert!(open(p, false).unwrap().bitmaps().unwrap().is_empty());
}

#[test]
fn resize_grows_bitmaps_like_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = qemu_image(dir.path(), "ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    let theirs = theirs.to_str().unwrap();
    std::fs::copy(&ours, theirs).unwrap();
    let d = open(&ours, true).unwrap();
    d.resize(200 << 20).unwrap();
    d.write(150 << 20, &[9u8; 512]).unwrap();
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["resize", theirs, "200M"]);
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 9 150M 512", theirs],
    );
    qemu_check_clean(&ours);
    assert_eq!(qemu_bitmaps(&ours), qemu_bitmaps(theirs));
    let (a, b) = (open(&ours, false).unwrap(), open(theirs, false).unwrap());
    for n in ["b1", "b2"] {
        assert_eq!(a.bitmap_read(n).unwrap(), b.bitmap_read(n).unwrap(), "{n}");
    }
}
