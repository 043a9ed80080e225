//! qcow2 shrink, grow with preallocation, and amend at the driver level, against qemu-img on
//! copies of the same images: `qemu-img check` clean, `compare` equal, the same file size after a
//! shrink, and `info` showing the amended fields; refusals leave the image untouched.
mod common;
use common::{have_qemu, ok, serial, storage};
use qimg_core::{BlockDriver, ErrorCode};
use qimg_formats::{open_driver, OpenOptions};
use std::sync::Arc;

fn open(path: &str) -> Arc<dyn BlockDriver> {
    open_driver(
        "qcow2",
        storage(path, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {path}: {}", e.message))
}

/// A qemu-made image with data, zero and compressed clusters, and a copy of it.
fn pair(dir: &std::path::Path, name: &str, opts: &str) -> (String, String) {
    let a = dir
        .join(format!("{name}.qcow2"))
        .to_str()
        .unwrap()
        .to_string();
    let b = dir
        .join(format!("{name}-qemu.qcow2"))
        .to_str()
        .unwrap()
        .to_string();
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-o", opts, &a, "32M"],
    );
    ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 1 0 9M",
            "-c",
            "write -z 10M 1M",
            "-c",
            "write -c -P 2 20M 64k",
            "-c",
            "write -P 3 30M 1M",
            &a,
        ],
    );
    std::fs::copy(&a, &b).unwrap();
    (a, b)
}

fn refcount_bits(path: &str) -> u64 {
    let j: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["info", "--output=json", path])).unwrap();
    j["format-specific"]["data"]["refcount-bits"]
        .as_u64()
        .unwrap()
}

#[test]
fn shrink_matches_qemu_for_every_cluster_size() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (k, opts) in [
        "cluster_size=512",
        "cluster_size=4k,refcount_bits=2",
        "cluster_size=64k",
        "cluster_size=64k,refcount_bits=64",
    ]
    .iter()
    .enumerate()
    {
        let (ours, theirs) = pair(dir.path(), &format!("s{k}"), opts);
        let d = open(&ours);
        d.truncate(5 << 20, "off").unwrap();
        d.close().unwrap();
        drop(d);
        ok(
            "qemu-img",
            &["resize", "-q", "--shrink", "-f", "qcow2", &theirs, "5M"],
        );
        ok("qemu-img", &["check", "-q", "-f", "qcow2", &ours]);
        ok("qemu-img", &["compare", "-q", &ours, &theirs]);
        assert_eq!(
            std::fs::metadata(&ours).unwrap().len(),
            std::fs::metadata(&theirs).unwrap().len(),
            "{opts}"
        );
    }
}

#[test]
fn grow_with_each_preallocation_reads_zeros_and_checks_clean() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (k, mode) in ["off", "metadata", "falloc", "full"].iter().enumerate() {
        let (ours, theirs) = pair(dir.path(), &format!("g{k}"), "cluster_size=16k");
        let d = open(&ours);
        d.truncate((48 << 20) + 512, mode).unwrap();
        let mut tail = vec![1u8; 4096];
        d.read((48 << 20) - 4096, &mut tail).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
        d.close().unwrap();
        drop(d);
        let arg = format!("--preallocation={mode}");
        ok(
            "qemu-img",
            &["resize", "-q", &arg, "-f", "qcow2", &theirs, "50332160"],
        );
        ok("qemu-img", &["check", "-q", "-f", "qcow2", &ours]);
        ok("qemu-img", &["compare", "-q", &ours, &theirs]);
    }
}

#[test]
fn preallocation_modes_qcow2_does_not_know_are_refused() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ours, _) = pair(dir.path(), "bad", "cluster_size=64k");
    let d = open(&ours);
    assert_eq!(
        d.truncate(64 << 20, "sparse").unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(d.virtual_size(), 32 << 20);
    d.close().unwrap();
}

#[test]
fn amend_refcount_bits_through_every_width() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = pair(dir.path(), "rc", "cluster_size=4k");
    // 16 compressed 4 KiB clusters share one host cluster: a refcount of 16 needs 8 bits.
    let d = open(&ours);
    let e = d
        .amend(&[("refcount_bits".into(), "4".into())])
        .unwrap_err();
    assert!(e
        .message
        .starts_with("Cannot decrease refcount entry width to 4 bits"));
    d.close().unwrap();
    drop(d);
    for bits in [8u64, 32, 64, 16] {
        let d = open(&ours);
        d.amend(&[("refcount_bits".into(), bits.to_string())])
            .unwrap();
        d.close().unwrap();
        drop(d);
        ok("qemu-img", &["check", "-q", "-f", "qcow2", &ours]);
        assert_eq!(refcount_bits(&ours), bits);
        ok("qemu-img", &["compare", "-q", &ours, &theirs]);
    }
}

#[test]
fn amend_downgrade_then_upgrade_round_trips() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = pair(dir.path(), "v", "lazy_refcounts=on");
    for compat in ["0.10", "1.1"] {
        let d = open(&ours);
        d.amend(&[("compat".into(), compat.into())]).unwrap();
        d.close().unwrap();
        drop(d);
        ok(
            "qemu-img",
            &[
                "amend",
                "-f",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
                &theirs,
            ],
        );
        ok("qemu-img", &["check", "-q", "-f", "qcow2", &ours]);
        ok("qemu-img", &["compare", "-q", &ours, &theirs]);
        let info = |p: &str| {
            let mut j: serde_json::Value =
                serde_json::from_str(&ok("qemu-img", &["info", "--output=json", p])).unwrap();
            j["format-specific"].take()
        };
        assert_eq!(info(&ours), info(&theirs), "compat={compat}");
    }
}

#[test]
fn refused_amend_leaves_the_image_untouched() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = pair(dir.path(), "r", "refcount_bits=8");
    let before = std::fs::read(&ours).unwrap();
    let d = open(&ours);
    let e = d.amend(&[("compat".into(), "0.10".into())]).unwrap_err();
    assert_eq!(e.message, "compat=0.10 requires refcount_bits=16");
    let e = d
        .amend(&[("cluster_size".into(), "4096".into())])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    d.close().unwrap();
    drop(d);
    assert_eq!(std::fs::read(&ours).unwrap(), before);
    ok("qemu-img", &["compare", "-q", &ours, &theirs]);
}
