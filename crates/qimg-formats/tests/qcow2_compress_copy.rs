//! `convert -c` through the core copy loop against real qemu-img: clusters the source already
//! stores compressed (same type and cluster size) are copied as stored, byte for byte; other
//! clusters are compressed on several threads at the requested level; every target passes
//! `qemu-img check` and compares equal to its source.
mod common;
use common::{have_qemu, run, serial, storage};
use qimg_core::copy::{copy_range, CopyOptions};
use qimg_core::BlockDriver;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

const SIZE: u64 = 6 << 20;

/// A qcow2 image QEMU compressed (`compression_type`, 64 KiB clusters) from a patterned source.
fn qemu_compressed(dir: &std::path::Path, kind: &str) -> String {
    let src = dir.join(format!("{kind}.src.qcow2"));
    let s = src.to_str().unwrap();
    assert!(run("qemu-img", &["create", "-q", "-f", "qcow2", s, "6M"])
        .status
        .success());
    let io = run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x41 0 1M",
            "-c",
            "write -P 0x42 1536k 100k",
            "-c",
            "write -P 0x43 5M 1M",
            s,
        ],
    );
    assert!(io.status.success(), "{io:?}");
    let out = dir.join(format!("{kind}.qcow2"));
    let o = out.to_str().unwrap().to_string();
    let opt = format!("compression_type={kind}");
    let c = run(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", "-o", &opt, s, &o],
    );
    assert!(c.status.success(), "{c:?}");
    o
}

fn open(path: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    open_driver(
        "qcow2",
        storage(path, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Create a qcow2 target and copy `src` into it compressed.
fn copy_compressed(
    src: &dyn BlockDriver,
    dst: &str,
    kind: &str,
    level: Option<u32>,
    threads: usize,
) {
    let st = storage(dst, false, true);
    let co = CreateOptions {
        size: SIZE,
        compression_type: Some(kind.into()),
        ..Default::default()
    };
    create_image("qcow2", st, &co).unwrap();
    let d = open(dst, false);
    let opts = CopyOptions {
        sparse_size: 4096,
        target_zeroed: true,
        layers: None,
        compress: true,
        compress_level: level,
        compress_threads: threads,
    };
    // Two chunks, as the TS scheduler would issue them.
    let half = SIZE / 2;
    copy_range(src, d.as_ref(), 0, half, 0, &opts).unwrap();
    copy_range(src, d.as_ref(), half, SIZE - half, 0, &opts).unwrap();
    d.close().unwrap();
}

fn assert_clean_and_equal(src: &str, dst: &str) {
    let chk = run("qemu-img", &["check", dst]);
    assert!(
        chk.status.success(),
        "{}",
        String::from_utf8_lossy(&chk.stdout)
    );
    let cmp = run(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "qcow2", src, dst],
    );
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}

#[test]
fn compressed_clusters_are_copied_as_stored() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for kind in ["zlib", "zstd"] {
        let src_path = qemu_compressed(dir.path(), kind);
        let src = open(&src_path, true);
        let dst_path = dir.path().join(format!("{kind}.copy.qcow2"));
        let d = dst_path.to_str().unwrap();
        copy_compressed(src.as_ref(), d, kind, None, 3);
        assert_clean_and_equal(&src_path, d);
        let dst = open(d, true);
        let mut same = 0;
        for pos in (0..SIZE).step_by(65536) {
            let a = src.read_compressed_raw(pos).unwrap();
            let b = dst.read_compressed_raw(pos).unwrap();
            match (a, b) {
                (Some(a), Some(b)) => {
                    assert_eq!(
                        &b.data[..a.data.len()],
                        &a.data[..],
                        "{kind} cluster at {pos}"
                    );
                    same += 1;
                }
                (None, None) => {}
                (a, b) => panic!("{kind} at {pos}: {:?} vs {:?}", a.is_some(), b.is_some()),
            }
        }
        assert!(same >= 17, "{kind}: only {same} clusters copied as stored");
    }
}

#[test]
fn another_type_is_recompressed_on_several_threads_at_each_level() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src_path = qemu_compressed(dir.path(), "zlib");
    let src = open(&src_path, true);
    for (kind, level) in [("zstd", Some(1)), ("zstd", Some(19)), ("zstd", None)] {
        let dst_path = dir.path().join(format!("re-{kind}-{level:?}.qcow2"));
        let d = dst_path.to_str().unwrap();
        copy_compressed(src.as_ref(), d, kind, level, 4);
        assert_clean_and_equal(&src_path, d);
        let dst = open(d, true);
        let c = dst
            .read_compressed_raw(0)
            .unwrap()
            .expect("cluster 0 compressed");
        assert_eq!(c.kind, 1, "zstd target stores zstd clusters");
    }
    // A level the compression type does not have is refused with a typed error.
    let bad = dir.path().join("bad.qcow2");
    let b = bad.to_str().unwrap();
    create_image(
        "qcow2",
        storage(b, false, true),
        &CreateOptions {
            size: SIZE,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open(b, false);
    let opts = CopyOptions {
        sparse_size: 4096,
        target_zeroed: true,
        layers: None,
        compress: true,
        compress_level: Some(12),
        compress_threads: 2,
    };
    // Source without compressed clusters: a plain qcow2 with data.
    let plain = dir.path().join("plain.qcow2");
    let p = plain.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", p, "6M"]);
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 7 0 128k", p]);
    let ps = open(p, true);
    let err = copy_range(ps.as_ref(), d.as_ref(), 0, SIZE, 0, &opts).unwrap_err();
    assert_eq!(err.code, qimg_core::ErrorCode::InvalidArgument, "{err}");
    d.close().unwrap();
}
