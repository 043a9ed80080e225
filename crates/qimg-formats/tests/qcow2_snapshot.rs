//! qcow2 internal snapshots against qemu-img: snapshots QEMU made are listed, checked, written
//! through (copy-on-write) and read back by qimg; snapshots qimg makes, applies and deletes pass
//! `qemu-img check`, appear in `qemu-img snapshot -l`, and convert (`-l`) to the same bytes.
//! Hostile snapshot tables are refused with typed errors, one case per limit.
mod common;
use common::{have_qemu, ok, run, serial, storage, CrashAt};
use qimg_core::{BlockDriver, ErrorCode, RepairMode, SnapshotSelector};
use qimg_formats::{open_driver, OpenOptions};
use std::sync::Arc;

const MIB: usize = 1 << 20;

fn open(path: &str, read_only: bool) -> qimg_core::Result<Arc<dyn BlockDriver>> {
    open_driver(
        "qcow2",
        storage(path, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
}

fn qemu_check_clean(path: &str) {
    let o = run("qemu-img", &["check", path]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "qemu-img check {path}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `qemu-img convert -l SEL` (or the active layer) to raw bytes.
fn qemu_raw(path: &str, snap: Option<&str>) -> Vec<u8> {
    let out = format!(
        "{path}.{}.raw",
        snap.unwrap_or("active").replace(['=', ','], "_")
    );
    let mut args = vec!["convert", "-O", "raw"];
    if let Some(s) = snap {
        args.extend(["-l", s]);
    }
    args.extend([path, out.as_str()]);
    ok("qemu-img", &args);
    std::fs::read(&out).unwrap()
}

fn read_all(d: &dyn BlockDriver) -> Vec<u8> {
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read(0, &mut b).unwrap();
    b
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i / 512) as u8 ^ seed).collect()
}

#[test]
fn qemu_made_snapshots_are_read_checked_and_written_through() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.qcow2");
    let p = img.to_str().unwrap();
    ok("qemu-img", &["create", "-f", "qcow2", p, "4M"]);
    ok("qemu-io", &["-c", "write -P 0xa1 0 1M", p]);
    ok("qemu-img", &["snapshot", "-c", "s1", p]);
    ok("qemu-io", &["-c", "write -P 0xb2 512k 1M", p]);
    ok("qemu-img", &["snapshot", "-c", "s2", p]);
    let s1 = qemu_raw(p, Some("s1"));
    let s2 = qemu_raw(p, Some("s2"));

    let d = open(p, false).unwrap();
    let list = d.snapshots().unwrap();
    assert_eq!(
        list.iter()
            .map(|s| (s.id.as_str(), s.name.as_str()))
            .collect::<Vec<_>>(),
        [("1", "s1"), ("2", "s2")]
    );
    assert_eq!(list[0].disk_size, 4 << 20);
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
    // Partial and whole-cluster writes into clusters and L2 tables shared with both snapshots.
    d.write(1000, &[0xc3; 70000]).unwrap();
    d.write(3 << 20, &[0xd4; 65536]).unwrap();
    d.write_zeroes(640 << 10, 128 << 10, true).unwrap();
    let view = d.snapshot_view(SnapshotSelector::IdOrName("s1")).unwrap();
    assert!(read_all(view.as_ref()) == s1, "view of s1");
    let active = read_all(d.as_ref());
    d.close().unwrap();
    drop((d, view));
    qemu_check_clean(p);
    assert!(qemu_raw(p, Some("s1")) == s1, "s1 changed");
    assert!(qemu_raw(p, Some("snapshot.id=2")) == s2, "s2 changed");
    assert!(
        qemu_raw(p, None) == active,
        "active differs from what qimg wrote"
    );

    // QEMU reverts and deletes what qimg wrote through; qimg reads the result.
    ok("qemu-img", &["snapshot", "-a", "s2", p]);
    ok("qemu-img", &["snapshot", "-d", "s1", p]);
    let d = open(p, true).unwrap();
    assert!(read_all(d.as_ref()) == s2);
    assert_eq!(d.snapshots().unwrap().len(), 1);
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
}

#[test]
fn qimg_snapshots_are_what_qemu_sees() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.qcow2");
    let p = img.to_str().unwrap();
    ok(
        "qemu-img",
        &["create", "-f", "qcow2", "-o", "cluster_size=4k", p, "3M"],
    );
    let d = open(p, false).unwrap();
    let a = pattern(2 * MIB, 0x11);
    d.write(0, &a).unwrap();
    let sa = d.snapshot_create("a").unwrap();
    assert_eq!(sa.id, "1");
    d.write((MIB / 2) as u64, &pattern(MIB, 0x22)).unwrap();
    let after_b = read_all(d.as_ref());
    let sb = d.snapshot_create("b").unwrap();
    assert_eq!(sb.id, "2");
    d.write(4096 * 3 + 17, &pattern(300_000, 0x33)).unwrap();
    d.discard(2 * MIB as u64, MIB as u64).unwrap();
    let active = read_all(d.as_ref());
    d.flush().unwrap();
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
    d.close().unwrap();
    drop(d);
    qemu_check_clean(p);
    let list = ok("qemu-img", &["snapshot", "-l", p]);
    assert!(
        list.contains("\n1       a ") && list.contains("\n2       b "),
        "{list}"
    );
    let mut want_a = a.clone();
    want_a.resize(3 * MIB, 0);
    assert!(qemu_raw(p, Some("a")) == want_a);
    assert!(qemu_raw(p, Some("snapshot.name=b")) == after_b);
    assert!(qemu_raw(p, None) == active);

    // Apply, then delete by name and by ID; QEMU checks each step.
    let d = open(p, false).unwrap();
    d.snapshot_apply(SnapshotSelector::IdOrName("1")).unwrap();
    assert!(read_all(d.as_ref()) == want_a);
    d.write(0, &[0x44; 5000]).unwrap();
    d.close().unwrap();
    drop(d);
    qemu_check_clean(p);
    let d = open(p, false).unwrap();
    d.snapshot_delete(SnapshotSelector::Exact {
        id: None,
        name: Some("b"),
    })
    .unwrap();
    let err = d
        .snapshot_delete(SnapshotSelector::Exact {
            id: None,
            name: Some("b"),
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    d.snapshot_delete(SnapshotSelector::Exact {
        id: Some("1"),
        name: None,
    })
    .unwrap();
    let mut want = want_a.clone();
    want[..5000].fill(0x44);
    assert!(read_all(d.as_ref()) == want);
    d.close().unwrap();
    drop(d);
    qemu_check_clean(p);
    assert_eq!(ok("qemu-img", &["snapshot", "-l", p]), "");
    // Without snapshots every cluster is COPIED again: QEMU's check agrees (no OFLAG errors).
    assert!(qemu_raw(p, None) == want);
}

#[test]
fn qemu_applies_and_deletes_snapshots_qimg_made() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("r.qcow2");
    let p = img.to_str().unwrap();
    ok("qemu-img", &["create", "-f", "qcow2", p, "2M"]);
    let d = open(p, false).unwrap();
    d.write(0, &[0x55; 200_000]).unwrap();
    d.snapshot_create("keep").unwrap();
    let kept = read_all(d.as_ref());
    d.write(0, &[0x66; 100_000]).unwrap();
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["snapshot", "-a", "keep", p]);
    qemu_check_clean(p);
    let d = open(p, true).unwrap();
    assert!(read_all(d.as_ref()) == kept);
    drop(d);
    ok("qemu-img", &["snapshot", "-d", "keep", p]);
    qemu_check_clean(p);
    let d = open(p, true).unwrap();
    assert!(d.snapshots().unwrap().is_empty());
    assert!(read_all(d.as_ref()) == kept);
}

/// Clear COPIED on the first data entry of the active L2 table of `path`.
fn clear_first_copied(path: &str) -> u64 {
    let mut b = std::fs::read(path).unwrap();
    let be = |b: &[u8], o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let l1 = be(&b, 40) as usize;
    let l2 = (be(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let e = be(&b, l2) & !(1 << 63);
    b[l2..l2 + 8].copy_from_slice(&e.to_be_bytes());
    std::fs::write(path, b).unwrap();
    e
}

#[test]
fn oflag_copied_mismatches_are_reported_and_repaired_like_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.qcow2");
    let p = img.to_str().unwrap();
    ok("qemu-img", &["create", "-f", "qcow2", p, "1M"]);
    ok("qemu-io", &["-c", "write -P 1 0 64k", p]);
    let e = clear_first_copied(p);
    let q = run("qemu-img", &["check", "--output=json", p]);
    assert_eq!(q.status.code(), Some(2));
    let qj: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let msg = format!("ERROR OFLAG_COPIED data cluster: l2_entry={e:x} refcount=1");
    assert!(String::from_utf8_lossy(&q.stderr).contains(&msg));
    let d = open(p, true).unwrap();
    let r = d.check(RepairMode::None).unwrap();
    assert!(r.messages.contains(&msg), "{:?}", r.messages);
    assert_eq!(r.corruptions, qj["corruptions"].as_u64().unwrap());
    drop(d);
    let d = open(p, false).unwrap();
    let r = d.check(RepairMode::All).unwrap();
    assert_eq!((r.corruptions, r.corruptions_fixed), (0, 1));
    d.close().unwrap();
    drop(d);
    qemu_check_clean(p);
}

// ---- hostile snapshot tables ----

/// A qemu-img image (64 KiB clusters) with one snapshot; returns its bytes and the table offset.
fn with_snapshot(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize) {
    let img = dir.join("h.qcow2");
    let p = img.to_str().unwrap();
    ok("qemu-img", &["create", "-f", "qcow2", p, "1M"]);
    ok("qemu-io", &["-c", "write -P 7 0 64k", p]);
    ok("qemu-img", &["snapshot", "-c", "s", p]);
    let b = std::fs::read(&img).unwrap();
    let t = u64::from_be_bytes(b[64..72].try_into().unwrap()) as usize;
    (img, b, t)
}

fn refused(img: &std::path::Path, b: &[u8], want: &str) {
    std::fs::write(img, b).unwrap();
    let p = img.to_str().unwrap();
    for ro in [true, false] {
        let e = match open(p, ro) {
            Ok(_) => panic!("{want}: opened"),
            Err(e) => e,
        };
        assert_eq!(e.code, ErrorCode::Corrupt, "{want}: {e:?}");
        assert!(e.message.contains(want), "{want}: {}", e.message);
    }
}

#[test]
fn hostile_snapshot_tables_are_typed_errors() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, good, t) = with_snapshot(dir.path());
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());

    let mut b = good.clone();
    put32(&mut b, 60, 65537);
    refused(&img, &b, "Too many snapshots");

    let mut b = good.clone();
    put32(&mut b, t + 36, 1025);
    refused(&img, &b, "Too much extra metadata");

    let mut b = good.clone();
    put32(&mut b, t + 8, (32 << 20) / 8 + 1);
    refused(&img, &b, "L1 table too large");

    let mut b = good.clone();
    put64(&mut b, t, 0x10200);
    refused(&img, &b, "L1 table offset");

    let mut b = good.clone();
    put64(&mut b, t, 1 << 40);
    refused(&img, &b, "L1 table offset");

    let mut b = good.clone();
    put64(&mut b, 64, (t + 512) as u64);
    refused(&img, &b, "snapshot table offset");

    let mut b = good.clone();
    put64(&mut b, 64, 1 << 30);
    refused(&img, &b, "Snapshot table offset");

    // The table is the last thing in QEMU's file: a 64 KiB name runs past its end.
    let mut b = good.clone();
    b[t + 14..t + 16].copy_from_slice(&[0xff, 0xff]);
    refused(&img, &b, "beyond the end of the image file");

    // A table over 64 MiB: 512 entries with 64 KiB IDs and names, in a sparse file.
    let mut b = good.clone();
    put32(&mut b, 60, 600);
    let mut off = t;
    for _ in 0..600 {
        off = off.div_ceil(8) * 8;
        if b.len() < off + 40 {
            b.resize(off + 40, 0);
        }
        b[off..off + 40].fill(0);
        b[off + 12..off + 16].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        off += 40 + 2 * 65535;
    }
    b.resize(off + 4096, 0);
    refused(&img, &b, "Snapshot table is too big");

    // Extra data too short for version 3: opens, and check reports it as qemu-img does.
    let mut b = good.clone();
    put32(&mut b, t + 36, 8);
    std::fs::write(&img, &b).unwrap();
    let q = run("qemu-img", &["check", img.to_str().unwrap()]);
    assert_eq!(q.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&q.stderr).contains("snapshot table entry 0 is incomplete"));
    let d = open(img.to_str().unwrap(), true).unwrap();
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!(r.corruptions, 1, "{:?}", r.messages);
    assert!(r.messages[0].contains("snapshot table entry 0 is incomplete"));
    drop(d);

    // A disk size its L1 table cannot map: refused when used, not at open.
    let mut b = good.clone();
    put64(&mut b, t + 48, 1 << 40);
    std::fs::write(&img, &b).unwrap();
    let d = open(img.to_str().unwrap(), false).unwrap();
    let sel = SnapshotSelector::IdOrName("s");
    assert_eq!(d.snapshot_apply(sel).unwrap_err().code, ErrorCode::Corrupt);
    assert_eq!(d.snapshot_view(sel).err().unwrap().code, ErrorCode::Corrupt);
}

// ---- crash safety ----

/// Run `op` on a copy of `orig` crashing at (k, j); returns the flushes the run made.
fn crash_run(path: &str, orig: &[u8], k: usize, j: usize, op: &dyn Fn(&dyn BlockDriver)) -> usize {
    std::fs::write(path, orig).unwrap();
    let st = Arc::new(CrashAt::new(storage(path, false, false), k, j));
    let d = open_driver(
        "qcow2",
        st.clone(),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap();
    op(d.as_ref());
    let _ = d.close();
    drop(d);
    st.flushes.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn a_crash_at_any_point_of_create_apply_delete_write_loses_nothing() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crash.qcow2");
    let p = img.to_str().unwrap();
    ok(
        "qemu-img",
        &["create", "-f", "qcow2", "-o", "cluster_size=4k", p, "1M"],
    );
    ok("qemu-io", &["-c", "write -P 1 0 300k", p]);
    ok("qemu-img", &["snapshot", "-c", "old", p]);
    ok("qemu-io", &["-c", "write -P 2 100k 100k", p]);
    let orig = std::fs::read(&img).unwrap();
    let active = qemu_raw(p, None);
    let snap = qemu_raw(p, Some("old"));
    type Op = Box<dyn Fn(&dyn BlockDriver)>;
    let ops: [(&str, Op); 4] = [
        ("create", Box::new(|d| drop(d.snapshot_create("new")))),
        (
            "apply",
            Box::new(|d| drop(d.snapshot_apply(SnapshotSelector::IdOrName("old")))),
        ),
        (
            "delete",
            Box::new(|d| drop(d.snapshot_delete(SnapshotSelector::IdOrName("old")))),
        ),
        ("write", Box::new(|d| drop(d.write(150 << 10, &[3; 70000])))),
    ];
    for (name, op) in ops {
        let total = crash_run(p, &orig, usize::MAX, 0, op.as_ref());
        for k in 0..=total {
            for j in [0, 1, 2, 3, usize::MAX] {
                crash_run(p, &orig, k, j, op.as_ref());
                let o = run("qemu-img", &["check", p]);
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                // Leaks, and in one window per operation (as in QEMU: between the refcount
                // update and the table update) COPIED flags that disagree with the refcounts.
                // Both are harmless and `check -r all` repairs them.
                let copied_only = err
                    .lines()
                    .filter(|l| l.starts_with("ERROR"))
                    .all(|l| l.starts_with("ERROR OFLAG_COPIED"));
                let code = o.status.code();
                assert!(
                    matches!(code, Some(0) | Some(3)) || (code == Some(2) && copied_only),
                    "{name} crashed at flush {k} + {j} writes: {err}"
                );
                if code == Some(2) {
                    ok("qemu-img", &["check", "-r", "all", p]);
                    qemu_check_clean(p);
                }
                let now = qemu_raw(p, None);
                if name == "apply" {
                    assert!(now == active || now == snap, "{name} at {k}+{j}: data");
                }
                if name == "create" {
                    assert!(
                        qemu_raw(p, None) == active,
                        "{name} at {k}+{j}: data changed"
                    );
                }
            }
        }
    }
}
