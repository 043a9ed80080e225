//! Crash safety of qed and qcow (v1): a power cut at every flush boundary (and after 0–3 writes
//! past it) of allocating writes, in-place writes, zero writes and close never leaves a table
//! pointing at space whose contents were not durable. QEMU's check of the qed image finds leaks
//! at most (never corruption), the next read-write open repairs it, and every guest cluster reads
//! as either its old or its new contents.
mod common;
use common::{have_qemu, run, serial, storage, CrashAt};
use qimg_core::BlockDriver;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

const SIZE: usize = 4 << 20;
const CS: usize = 4096;

/// The writes under test, mirrored into `model`.
fn ops(d: &dyn BlockDriver, model: &mut [u8]) -> qimg_core::Result<()> {
    d.write(0, &[0x11; 3 * CS])?; // in place (allocated before)
    model[..3 * CS].fill(0x11);
    d.write(100_000, &[0x22; 300_000])?; // new clusters, partial ends
    model[100_000..400_000].fill(0x22);
    d.flush()?;
    d.write_zeroes(8 * CS as u64, 4 * CS as u64, true)?;
    model[8 * CS..12 * CS].fill(0);
    d.write((3 << 20) + 5, &[0x33; 9000])?; // a new L2 table region for small tables
    model[(3 << 20) + 5..(3 << 20) + 9005].fill(0x33);
    d.close()
}

fn image(fmt: &str, path: &str) -> Vec<u8> {
    create_image(
        fmt,
        storage(path, false, true),
        &CreateOptions {
            size: SIZE as u64,
            cluster_size: (fmt == "qed").then_some(CS as u64),
            table_size: (fmt == "qed").then_some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let d = open_driver(fmt, storage(path, false, false), &OpenOptions::default()).unwrap();
    d.write(0, &[0x77; 12 * CS]).unwrap();
    d.close().unwrap();
    drop(d);
    std::fs::read(path).unwrap()
}

fn crash_matrix(fmt: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(format!("c.{fmt}"));
    let path = p.to_str().unwrap();
    let orig = image(fmt, path);
    let mut old = vec![0u8; SIZE];
    old[..12 * CS].fill(0x77);
    let mut new = old.clone();
    // Count the flushes of a full run.
    let total = {
        std::fs::write(&p, &orig).unwrap();
        let st = Arc::new(CrashAt::new(storage(path, false, false), usize::MAX, 0));
        let d = open_driver(fmt, st.clone(), &OpenOptions::default()).unwrap();
        ops(d.as_ref(), &mut new).unwrap();
        st.flushes.load(SeqCst)
    };
    assert!(total >= 4, "{fmt}: {total} flushes");
    for k in 0..=total {
        for j in 0..4 {
            std::fs::write(&p, &orig).unwrap();
            let st = Arc::new(CrashAt::new(storage(path, false, false), k, j));
            let d = open_driver(fmt, st, &OpenOptions::default()).unwrap();
            let mut scratch = old.clone();
            let _ = ops(d.as_ref(), &mut scratch);
            drop(d);
            if fmt == "qed" {
                let c = run("qemu-img", &["check", "-f", "qed", path]);
                assert!(
                    matches!(c.status.code(), Some(0) | Some(3)),
                    "qed crash at ({k},{j}): {}",
                    String::from_utf8_lossy(&c.stdout)
                );
            }
            // The next writable open (qed: repair) succeeds, and every cluster is old or new.
            let d = open_driver(fmt, storage(path, false, false), &OpenOptions::default())
                .unwrap_or_else(|e| panic!("{fmt} crash at ({k},{j}): {e}"));
            let mut got = vec![0u8; SIZE];
            d.read(0, &mut got).unwrap();
            for c in 0..SIZE / CS {
                let r = c * CS..(c + 1) * CS;
                assert!(
                    got[r.clone()] == old[r.clone()] || got[r.clone()] == new[r.clone()],
                    "{fmt} crash at ({k},{j}): cluster {c} is neither old nor new"
                );
            }
            d.close().unwrap();
            drop(d);
            if fmt == "qed" {
                let c = run("qemu-img", &["check", "-f", "qed", path]);
                assert!(matches!(c.status.code(), Some(0) | Some(3)));
            }
        }
    }
}

#[test]
fn qed_crash_at_every_flush_leaks_at_most() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    crash_matrix("qed");
}

#[test]
fn qcow_crash_at_every_flush_reads_old_or_new() {
    let _g = serial();
    crash_matrix("qcow");
}
