//! parallels: QEMU's v1/v2 samples decode to MANIFEST.md's sha256; images qemu-img creates and
//! qemu-io writes read back identically; images qimg creates and writes pass `qemu-img check`
//! and `qemu-img compare`; check findings and repairs match qemu-img's; the in-use marker.
mod common;
mod rofmt;
use common::{have_qemu, ok, run, serial, storage};
use qimg_core::{BlockDriver, LayerStatus, RepairMode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use rofmt::{read_all, sample, sha256};
use std::sync::Arc;

const SAMPLE_SHA: &str = "15faf41ebc93b5f734341cb7a2d909001e3f7306960f9d8bc63894f2a8e5bc45";

fn open_rw(path: &str) -> Arc<dyn BlockDriver> {
    open_driver(
        "parallels",
        storage(path, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap()
}

fn create(path: &str, size: u64, cluster: Option<u64>) {
    create_image(
        "parallels",
        storage(path, false, true),
        &CreateOptions {
            size,
            cluster_size: cluster,
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn samples_v1_v2_decode_to_manifest_sha() {
    for name in ["qemu-iotests/parallels-v1", "qemu-iotests/parallels-v2"] {
        let Some(p) = sample(name) else { return };
        let d = rofmt::open_ro("parallels", &p).unwrap();
        assert_eq!(d.virtual_size(), 2097152);
        let data = read_all(&*d);
        assert_eq!(sha256(&data), SAMPLE_SHA, "{name}");
        assert!(
            data[..65536].iter().all(|&b| b == 0x11),
            "{name}: iotest 076 pattern"
        );
    }
}

#[test]
fn create_matches_qemu_img_byte_for_byte() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (size, cs) in [
        (10u64 << 20, None),
        (3 << 20, Some(65536)),
        (1_000_000, None),
        (5 << 30, None),
    ] {
        let a = dir.path().join("q.img");
        let b = dir.path().join("m.img");
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let mut args = vec!["create", "-q", "-f", "parallels"];
        let o = cs.map(|c| format!("cluster_size={c}"));
        if let Some(o) = &o {
            args.extend(["-o", o.as_str()]);
        }
        let s = size.to_string();
        args.extend([a, s.as_str()]);
        ok("qemu-img", &args);
        create(b, size, cs);
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "size {size} cluster {cs:?}"
        );
    }
}

#[test]
fn qimg_writes_pass_qemu_check_and_compare() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.img");
    let raw = dir.path().join("w.raw");
    let (img, raw) = (img.to_str().unwrap(), raw.to_str().unwrap());
    create(img, 4 << 20, Some(65536));
    let mut model = vec![0u8; 4 << 20];
    {
        let d = open_rw(img);
        let writes: [(u64, usize, u8); 5] = [
            (0, 4096, 0x44),
            (1 << 20, 65536, 0x33),
            (100_000, 200_000, 0x55),
            ((4 << 20) - 512, 512, 0x66),
            (2 << 20, 1 << 20, 0x77),
        ];
        for (off, len, pat) in writes {
            d.write(off, &vec![pat; len]).unwrap();
            model[off as usize..off as usize + len].fill(pat);
        }
        // A whole cluster zeroed is unmapped; part of one is written as zeros.
        d.write_zeroes(2 << 20, 65536, true).unwrap();
        d.write_zeroes(1 << 20, 1000, false).unwrap();
        model[2 << 20..(2 << 20) + 65536].fill(0);
        model[1 << 20..(1 << 20) + 1000].fill(0);
        assert_eq!(read_all(&*d), model);
        d.flush().unwrap();
        d.close().unwrap();
    }
    std::fs::write(raw, &model).unwrap();
    let c = run("qemu-img", &["check", "--output=json", img]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    ok(
        "qemu-img",
        &["compare", "-f", "parallels", "-F", "raw", img, raw],
    );
    // The in-use marker is cleared on close.
    assert_eq!(&std::fs::read(img).unwrap()[44..48], &[0, 0, 0, 0]);
    // Our own check agrees with qemu-img's JSON figures.
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    let d = rofmt::open_ro("parallels", img).unwrap();
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!(
        Some(v["image-end-offset"].as_u64().unwrap()),
        r.image_end_offset
    );
    assert_eq!(
        Some(v["total-clusters"].as_u64().unwrap()),
        r.total_clusters
    );
    assert_eq!(
        Some(v["allocated-clusters"].as_u64().unwrap()),
        r.allocated_clusters
    );
    assert_eq!(
        v["fragmented-clusters"].as_u64().unwrap_or(0),
        r.fragmented_clusters.unwrap()
    );
}

#[test]
fn qemu_written_image_reads_back_and_maps_identically() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.img");
    let img = img.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "parallels",
            "-o",
            "cluster_size=64k",
            img,
            "2M",
        ],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x33 1M 64k",
            "-c",
            "write -P 0x44 0 4k",
            "-c",
            "write -P 9 300k 10k",
            img,
        ],
    );
    let raw = dir.path().join("q.raw");
    let raw = raw.to_str().unwrap();
    ok(
        "qemu-img",
        &["convert", "-f", "parallels", "-O", "raw", img, raw],
    );
    let d = rofmt::open_ro("parallels", img).unwrap();
    assert_eq!(read_all(&*d), std::fs::read(raw).unwrap());
    let map: serde_json::Value = serde_json::from_str(&ok(
        "qemu-img",
        &["map", "--output=json", "-f", "parallels", img],
    ))
    .unwrap();
    for e in map.as_array().unwrap() {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let ours = d.block_status(start, len).unwrap();
        assert_eq!(ours[0].start, start);
        assert_eq!(ours[0].length, len, "extent at {start}");
        match ours[0].status {
            LayerStatus::Data { host_offset, .. } => {
                assert!(e["data"].as_bool().unwrap());
                assert_eq!(host_offset, e["offset"].as_u64());
            }
            LayerStatus::Unallocated => assert!(!e["present"].as_bool().unwrap()),
            s => panic!("unexpected {s:?}"),
        }
    }
}

/// Set the in-use marker of `path`.
fn mark_in_use(path: &str) {
    let mut b = std::fs::read(path).unwrap();
    b[44..48].copy_from_slice(&0x746F_6E59u32.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn in_use_marker_refuses_writes_until_repaired() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("u.img");
    let img = img.to_str().unwrap();
    create(img, 1 << 20, Some(65536));
    {
        let d = open_rw(img);
        d.write(0, &[1u8; 512]).unwrap();
        // While open read-write, the marker is on disk.
        assert_eq!(
            &std::fs::read(img).unwrap()[44..48],
            &0x746F_6E59u32.to_le_bytes()
        );
        d.close().unwrap();
    }
    mark_in_use(img);
    // qemu-img reports one corruption; so do we.
    let q = run("qemu-img", &["check", "--output=json", img]);
    assert_eq!(q.status.code(), Some(2));
    let r = rofmt::open_ro("parallels", img)
        .unwrap()
        .check(RepairMode::None)
        .unwrap();
    assert_eq!(r.corruptions, 1);
    assert_eq!(r.messages, ["ERROR image was not closed correctly"]);
    let d = open_rw(img);
    let e = d.write(0, &[2u8; 512]).unwrap_err();
    assert_eq!(e.code, qimg_core::ErrorCode::Corrupt);
    let r = d.check(RepairMode::All).unwrap();
    assert_eq!((r.corruptions, r.corruptions_fixed), (0, 1));
    d.write(0, &[2u8; 512]).unwrap();
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", img]);
}

#[test]
fn check_repairs_like_qemu_img() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("a.img");
    let base = base.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "parallels",
            "-o",
            "cluster_size=64k",
            base,
            "1M",
        ],
    );
    ok(
        "qemu-io",
        &["-c", "write -P 1 0 64k", "-c", "write -P 2 128k 64k", base],
    );
    let orig = std::fs::read(base).unwrap();
    let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let p = dir.path().join(name);
        let mut b = orig.clone();
        f(&mut b);
        std::fs::write(&p, b).unwrap();
        p.to_str().unwrap().to_owned()
    };
    // Leak at the end: same count as qemu-img, repaired by -r leaks.
    let leak = variant("l.img", &|b| b.extend(vec![0u8; 100_000]));
    let q: serde_json::Value =
        serde_json::from_slice(&run("qemu-img", &["check", "--output=json", &leak]).stdout)
            .unwrap();
    let r = rofmt::open_ro("parallels", &leak)
        .unwrap()
        .check(RepairMode::None)
        .unwrap();
    assert_eq!(r.leaks, q["leaks"].as_u64().unwrap());
    assert_eq!(
        r.messages,
        ["ERROR space leaked at the end of the image 100352"]
    );
    let r = open_rw(&leak).check(RepairMode::Leaks).unwrap();
    assert_eq!(r.leaks_fixed, 2);
    ok("qemu-img", &["check", &leak]);
    // An entry outside the file: zeroed by -r all, then qemu-img finds nothing.
    let out = variant("o.img", &|b| b[72..76].copy_from_slice(&9u32.to_le_bytes()));
    let r = rofmt::open_ro("parallels", &out)
        .unwrap()
        .check(RepairMode::None)
        .unwrap();
    assert_eq!(r.corruptions, 1);
    assert_eq!(r.messages[0], "ERROR cluster 2 is outside image");
    let d = open_rw(&out);
    assert_eq!(
        d.write(0, &[0u8; 512]).unwrap_err().code,
        qimg_core::ErrorCode::Corrupt
    );
    d.check(RepairMode::All).unwrap();
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", &out]);
    // Two entries sharing a cluster: the later one gets a copy, as qemu-img -r all does.
    let dup = variant("d.img", &|b| b[68..72].copy_from_slice(&2u32.to_le_bytes()));
    let r = rofmt::open_ro("parallels", &dup)
        .unwrap()
        .check(RepairMode::None)
        .unwrap();
    assert_eq!(r.messages, ["ERROR duplicate offset in BAT entry 2"]);
    let d = open_rw(&dup);
    let r = d.check(RepairMode::All).unwrap();
    assert_eq!(r.corruptions_fixed, 1);
    let data = read_all(&*d);
    d.close().unwrap();
    drop(d);
    assert!(data[65536..131072].iter().all(|&b| b == 2));
    assert!(data[131072..196608].iter().all(|&b| b == 2));
    ok("qemu-img", &["check", &dup]);
}
