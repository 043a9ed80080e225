//! Extended L2 entries (subclusters) against real qemu-img / qemu-io: subcluster-granular images
//! QEMU writes over a backing file read back identically; writes, zeroes and discards through the
//! driver leave images qemu-img checks clean and compares equal to a model; invalid subcluster
//! bitmaps are typed errors.
mod common;
use common::{have_qemu, ok, run, serial, storage};
use qimg_core::{BlockDriver, ErrorCode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

const SIZE: u64 = 4 << 20;

/// A patterned base and an extended-L2 overlay QEMU wrote at subcluster granularity.
fn qemu_overlay(dir: &std::path::Path, cluster: &str) -> (String, String) {
    let base = dir.join(format!("base-{cluster}.qcow2"));
    let top = dir.join(format!("top-{cluster}.qcow2"));
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    ok("qemu-img", &["create", "-q", "-f", "qcow2", b, "4M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 1 0 4M", b]);
    let opts = format!("extended_l2=on,cluster_size={cluster}");
    ok(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-o", &opts, "-b", b, "-F", "qcow2", t,
        ],
    );
    ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 2 4k 4k",
            "-c",
            "write -z 64k 8k",
            "-c",
            "write -P 3 1M 100k",
            "-c",
            "discard 1M 64k",
            "-c",
            "write -P 4 2047k 3k",
            t,
        ],
    );
    (b.to_string(), t.to_string())
}

fn open_chain(top: &str, base: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    let b = open_driver(
        "qcow2",
        storage(base, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let t = open_driver(
        "qcow2",
        storage(top, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap();
    t.set_backing(Some(b)).unwrap();
    t
}

fn decode(img: &str, out: &std::path::Path) -> Vec<u8> {
    ok(
        "qemu-img",
        &["convert", "-U", "-O", "raw", img, out.to_str().unwrap()],
    );
    std::fs::read(out).unwrap()
}

#[test]
fn reads_subclusters_qemu_wrote() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for cluster in ["16k", "64k", "2M"] {
        let (b, t) = qemu_overlay(dir.path(), cluster);
        let want = decode(&t, &dir.path().join("want.raw"));
        let d = open_chain(&t, &b, true);
        let mut got = vec![0u8; SIZE as usize];
        d.read(0, &mut got).unwrap();
        assert!(got == want, "{cluster}: contents differ");
        // Unaligned small reads across subcluster boundaries.
        for (off, len) in [(4095u64, 2u64), (65535, 8194), (2047 * 1024 - 1, 3074)] {
            let mut part = vec![0u8; len as usize];
            d.read(off, &mut part).unwrap();
            assert_eq!(
                part,
                want[off as usize..(off + len) as usize],
                "{cluster} at {off}"
            );
        }
    }
}

#[test]
fn writes_stay_consistent_for_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Over QEMU's mixed clusters (with a backing file), and on a fresh qimg-created image.
    let (b, t) = qemu_overlay(dir.path(), "32k");
    let fresh = dir.path().join("fresh.qcow2");
    let f = fresh.to_str().unwrap();
    create_image(
        "qcow2",
        storage(f, false, true),
        &CreateOptions {
            size: SIZE,
            extended_l2: true,
            cluster_size: Some(65536),
            ..Default::default()
        },
    )
    .unwrap();
    for (img, base) in [(t.as_str(), Some(b.as_str())), (f, None)] {
        let mut model = decode(img, &dir.path().join("model.raw"));
        let d = match base {
            Some(b) => open_chain(img, b, false),
            None => {
                open_driver("qcow2", storage(img, false, false), &OpenOptions::default()).unwrap()
            }
        };
        let mut seed = 5u64;
        for _ in 0..80 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (seed >> 20) % SIZE;
            let len = ((seed >> 8) % 150_000).min(SIZE - off).max(1);
            let byte = (seed >> 56) as u8 | 1;
            match seed % 4 {
                0 => {
                    d.write_zeroes(off, len, seed & 16 != 0).unwrap();
                    model[off as usize..(off + len) as usize].fill(0);
                }
                _ => {
                    d.write(off, &vec![byte; len as usize]).unwrap();
                    model[off as usize..(off + len) as usize].fill(byte);
                }
            }
        }
        let mut got = vec![0u8; SIZE as usize];
        d.read(0, &mut got).unwrap();
        assert!(got == model, "{img}: driver reads back its model");
        d.close().unwrap();
        drop(d);
        let chk = run("qemu-img", &["check", img]);
        assert!(
            chk.status.success(),
            "{}{}",
            String::from_utf8_lossy(&chk.stdout),
            String::from_utf8_lossy(&chk.stderr)
        );
        assert!(
            decode(img, &dir.path().join("after.raw")) == model,
            "{img}: qemu reads the model"
        );
    }
}

#[test]
fn invalid_subcluster_bitmaps_are_typed_errors() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bad.qcow2");
    let i = img.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            i,
            "1M",
        ],
    );
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 9 0 4k", i]);
    // The first L2 table: find it through the L1 table (offset at header byte 40).
    let bytes = std::fs::read(i).unwrap();
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let l2 = (u64::from_be_bytes(bytes[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00)
        as usize;
    let entry = u64::from_be_bytes(bytes[l2..l2 + 8].try_into().unwrap());
    for (what, e, bitmap) in [
        ("allocated and zero", entry, 0x0000_0001_0000_0001u64),
        ("zero flag", entry | 1, 1),
        (
            "compressed with bitmap",
            (1 << 62) | (entry & 0x00ff_ffff_ffff_fe00),
            1,
        ),
        ("allocated without host", 0, 1),
    ] {
        let mut b = bytes.clone();
        b[l2..l2 + 8].copy_from_slice(&e.to_be_bytes());
        b[l2 + 8..l2 + 16].copy_from_slice(&bitmap.to_be_bytes());
        std::fs::write(i, &b).unwrap();
        let d = open_driver(
            "qcow2",
            storage(i, true, false),
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let err = d.read(0, &mut buf).unwrap_err();
        assert_eq!(err.code, ErrorCode::Corrupt, "{what}: {err}");
    }
    // A subcluster size below 512 bytes (cluster_bits 13 with the extended-L2 bit) is refused.
    let mut b = bytes.clone();
    b[20..24].copy_from_slice(&13u32.to_be_bytes());
    std::fs::write(i, &b).unwrap();
    let err = open_driver(
        "qcow2",
        storage(i, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .err()
    .expect("refused");
    assert_eq!(err.code, ErrorCode::Corrupt, "{err}");
}
