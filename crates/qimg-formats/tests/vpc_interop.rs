//! vpc against qemu-img 10: CHS geometry and sizes for many sizes (dynamic, fixed, force_size),
//! footer and dynamic header byte-compatible with QEMU's, images each side writes read back on
//! the other, fixed VHDs, a model-based random write run, the sample images, and power cuts at
//! every flush boundary of an allocating write.
#[path = "common/blockfmt.rs"]
mod blockfmt;
mod common;
use blockfmt::*;
use common::{have_qemu, run, serial};
use qimg_formats::CreateOptions;

fn vpc_opts(size: u64, subformat: &str, force_size: bool) -> CreateOptions {
    CreateOptions {
        size,
        subformat: Some(subformat.into()),
        force_size,
        ..Default::default()
    }
}

/// Bytes that differ between two footers QEMU and qimg made at different times: timestamp,
/// checksum, UUID.
fn same_footer(a: &[u8], b: &[u8]) -> bool {
    a[..24] == b[..24] && a[28..64] == b[28..64] && a[84..512] == b[84..512]
}

#[test]
fn sizes_and_geometry_match_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sizes: [u64; 12] = [
        512,
        1 << 20,
        10 << 20,
        100 << 20,
        (127 << 20) + 12345,
        1 << 30,
        (4 << 30) + 7,
        31 << 30,
        127 << 30,
        128 << 30,
        200 << 30,
        2040 << 30,
    ];
    for size in sizes {
        for (sub, force) in [("dynamic", false), ("dynamic", true), ("fixed", false)] {
            if sub == "fixed" && size > 1 << 30 {
                continue;
            }
            let ours = dir.path().join("ours.vhd");
            let theirs = dir.path().join("theirs.vhd");
            let (o, t) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
            qimg_create("vpc", o, vpc_opts(size, sub, force));
            let opt = format!(
                "subformat={sub},force_size={}",
                if force { "on" } else { "off" }
            );
            ok(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "vpc",
                    "-o",
                    &opt,
                    t,
                    &size.to_string(),
                ],
            );
            let (a, b) = (std::fs::read(o).unwrap(), std::fs::read(t).unwrap());
            let what = format!("{size} {opt}");
            assert_eq!(a.len(), b.len(), "{what}: file length");
            let n = a.len();
            assert!(same_footer(&a[n - 512..], &b[n - 512..]), "{what}: footer");
            if sub == "dynamic" {
                assert!(same_footer(&a[..512], &b[..512]), "{what}: footer copy");
                assert_eq!(a[512..n - 512], b[512..n - 512], "{what}: header and BAT");
            }
            let ia = qemu_info(o, "vpc");
            let ib = qemu_info(t, "vpc");
            assert_eq!(ia["virtual-size"], ib["virtual-size"], "{what}: size");
            assert_eq!(
                ia["cluster-size"], ib["cluster-size"],
                "{what}: cluster size"
            );
            let d = qimg_open("vpc", o, true);
            assert_eq!(
                d.virtual_size(),
                ib["virtual-size"].as_u64().unwrap(),
                "{what}"
            );
        }
    }
    let p = dir.path().join("big.vhd");
    let e = qimg_formats::create_image(
        "vpc",
        common::storage(p.to_str().unwrap(), false, true),
        &vpc_opts(2041 << 30, "dynamic", false),
    )
    .unwrap_err();
    assert_eq!(
        e.message,
        "The image size is too large for file format 'vpc'"
    );
}

#[test]
fn qemu_writes_read_back_in_qimg_and_qimg_writes_in_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.vhd");
    let p = p.to_str().unwrap();
    for sub in ["dynamic", "fixed"] {
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                &format!("subformat={sub}"),
                p,
                "9M",
            ],
        );
        ok(
            "qemu-io",
            &[
                "-f",
                "vpc",
                "-c",
                "write -P 0x11 1M 4k",
                "-c",
                "write -P 0x22 3M 2560k",
                p,
            ],
        );
        let d = qimg_open("vpc", p, true);
        assert!(
            read_all(d.as_ref()) == qemu_raw(p, "vpc"),
            "{sub}: qemu → qimg"
        );
        drop(d);
        let d = qimg_open("vpc", p, false);
        d.write(512, &[0x33; 5000]).unwrap();
        d.write(6 << 20, &[0x44; 3 << 20][..(2 << 20) - 7]).unwrap();
        let ours = read_all(d.as_ref());
        d.close().unwrap();
        drop(d);
        assert!(qemu_raw(p, "vpc") == ours, "{sub}: qimg → qemu");
        let q = dir.path().join("q.raw");
        std::fs::write(&q, &ours).unwrap();
        ok(
            "qemu-img",
            &["compare", "-f", "vpc", "-F", "raw", p, q.to_str().unwrap()],
        );
    }
}

#[test]
fn model_random_writes_then_qemu_compare() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (seed, sub) in [(11u64, "dynamic"), (12, "dynamic"), (13, "fixed")] {
        let p = dir.path().join("m.vhd");
        let p = p.to_str().unwrap();
        qimg_create("vpc", p, vpc_opts(9 << 20, sub, false));
        let model = model_run("vpc", p, seed, 60);
        let raw = format!("{p}.model");
        std::fs::write(&raw, &model).unwrap();
        ok("qemu-img", &["compare", "-f", "vpc", "-F", "raw", p, &raw]);
        // The trailing footer is intact after all the allocations.
        let b = std::fs::read(p).unwrap();
        assert_eq!(&b[b.len() - 512..b.len() - 504], b"conectix", "{sub}");
    }
}

#[test]
fn power_cut_at_any_point_of_an_allocating_write_never_dangles() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("crash.vhd");
    let p = p.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "vpc", p, "8M"]);
    ok("qemu-io", &["-f", "vpc", "-c", "write -P 1 0 1M", p]);
    let orig = std::fs::read(p).unwrap();
    let before = qemu_raw(p, "vpc");
    let op = |d: &dyn qimg_core::BlockDriver| {
        let _ = d.write(1 << 20, &[2; 3 << 20]);
        let _ = d.flush();
        let _ = d.write(6 << 20, &[3; 4096]);
    };
    let total = crash_run("vpc", p, &orig, usize::MAX, 0, &op);
    let mut last = before.clone();
    last[1 << 20..4 << 20].fill(2);
    last[6 << 20..(6 << 20) + 4096].fill(3);
    for k in 0..=total {
        for j in [0, 1, 2, 3, usize::MAX] {
            crash_run("vpc", p, &orig, k, j, &op);
            let now = qemu_raw(p, "vpc");
            for (i, (n, (b, a))) in now.iter().zip(before.iter().zip(last.iter())).enumerate() {
                assert!(n == b || n == a, "cut at {k}+{j}: byte {i} is {n}");
            }
            // And the next writer (qimg) still finds a consistent image.
            let d = qimg_open("vpc", p, false);
            d.write(7 << 20, &[4; 512]).unwrap();
            d.close().unwrap();
        }
    }
}

/// Compare an image of any virtual size with qemu-img's decode: allocated ranges byte for byte
/// (from a sparse raw conversion), the rest must be what `qemu-img map` also calls zero.
fn same_contents_as_qemu(d: &dyn qimg_core::BlockDriver, f: &str) {
    use std::os::unix::fs::FileExt;
    let raw = format!("{f}.cmp.raw");
    let raw = std::path::Path::new(&std::env::temp_dir())
        .join(std::path::Path::new(&raw).file_name().unwrap());
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vpc",
            "-O",
            "raw",
            f,
            raw.to_str().unwrap(),
        ],
    );
    let file = std::fs::File::open(&raw).unwrap();
    let size = d.virtual_size();
    let map: Vec<serde_json::Value> =
        serde_json::from_str(&ok("qemu-img", &["map", "--output=json", "-f", "vpc", f])).unwrap();
    let qemu_data: u64 = map
        .iter()
        .filter(|e| e["data"].as_bool().unwrap())
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    let (mut pos, mut ours_data) = (0u64, 0u64);
    while pos < size {
        for e in d.block_status(pos, (size - pos).min(1 << 30)).unwrap() {
            if let qimg_core::LayerStatus::Data { .. } = e.status {
                ours_data += e.length;
                let mut a = vec![0u8; e.length as usize];
                let mut b = vec![0u8; e.length as usize];
                d.read(e.start, &mut a).unwrap();
                file.read_exact_at(&mut b, e.start).unwrap();
                assert!(a == b, "{f}: data at {}", e.start);
            }
            pos = e.start + e.length;
        }
    }
    assert_eq!(ours_data, qemu_data, "{f}: allocated bytes");
    std::fs::remove_file(&raw).unwrap();
}

/// The first `n` guest bytes as qemu-img reads them (no full conversion of a large image).
fn qemu_raw_prefix(path: &str, n: usize) -> Vec<u8> {
    let out = format!("{path}.prefix.raw");
    let cmd = format!("qemu-img dd -f vpc -O raw if={path} of={out} bs={n} count=1");
    let o = run("sh", &["-c", &cmd]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

fn samples() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/samples is absent");
        None
    }
}

#[test]
fn sample_images_read_as_qemu_reads_them() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let Some(s) = samples() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d2v = dir.path().join("d2v.vhd");
    let o = run(
        "sh",
        &[
            "-c",
            &format!(
                "bzip2 -dc {}/qemu-iotests/d2v-zerofilled.vhd.bz2 > {}",
                s.display(),
                d2v.display()
            ),
        ],
    );
    assert!(o.status.success());
    let mut files = vec![
        d2v.to_str().unwrap().to_string(),
        s.join("qemu-iotests/virtualpc-dynamic.vhd")
            .to_str()
            .unwrap()
            .to_string(),
        s.join("generated/bximage-vpc.vhd")
            .to_str()
            .unwrap()
            .to_string(),
    ];
    for f in files.drain(..) {
        // Each opens writable too (a copy), and stays readable by QEMU after a write.
        let w = dir.path().join("w.vhd");
        std::fs::copy(&f, &w).unwrap();
        let ws = w.to_str().unwrap();
        let d = qimg_open("vpc", ws, false);
        d.write(4096, &[9; 4096]).unwrap();
        let ours = {
            let mut b = vec![0u8; 1 << 20];
            d.read(0, &mut b).unwrap();
            b
        };
        d.close().unwrap();
        drop(d);
        assert!(qemu_raw_prefix(ws, 1 << 20) == ours, "{f}: written copy");
        let d = qimg_open("vpc", &f, true);
        let info = qemu_info(&f, "vpc");
        assert_eq!(
            d.virtual_size(),
            info["virtual-size"].as_u64().unwrap(),
            "{f}"
        );
        same_contents_as_qemu(d.as_ref(), &f);
    }
    let e = qimg_formats::open_driver(
        "vpc",
        common::storage(
            s.join("qemu-iotests/afl5.img").to_str().unwrap(),
            true,
            false,
        ),
        &qimg_formats::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .err()
    .expect("afl5.img must be rejected");
    assert_eq!(e.code, qimg_core::ErrorCode::Corrupt);
    assert_eq!(e.message, "Max Table Entries too large (1073741825)");
}

/// A dynamic VHD with 512 KiB blocks (other tools' choice; QEMU only makes 2 MiB), built by hand.
fn handmade_vhd(path: &str, size: u64, block: u32) {
    fn sum(b: &[u8], field: usize) -> u32 {
        !b.iter()
            .enumerate()
            .filter(|(i, _)| !(field..field + 4).contains(i))
            .fold(0u32, |s, (_, &x)| s.wrapping_add(x as u32))
    }
    let entries = size.div_ceil(block as u64) as u32;
    let bat_bytes = (entries as u64 * 4).next_multiple_of(512) as usize;
    let mut f = [0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x10000u32.to_be_bytes());
    f[16..24].copy_from_slice(&512u64.to_be_bytes());
    f[28..32].copy_from_slice(b"win ");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[56..60].copy_from_slice(&[0x01, 0x00, 0x04, 0x11]);
    f[60..64].copy_from_slice(&3u32.to_be_bytes());
    let s = sum(&f, 64);
    f[64..68].copy_from_slice(&s.to_be_bytes());
    let mut h = [0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&1536u64.to_be_bytes());
    h[24..28].copy_from_slice(&0x10000u32.to_be_bytes());
    h[28..32].copy_from_slice(&entries.to_be_bytes());
    h[32..36].copy_from_slice(&block.to_be_bytes());
    let s = sum(&h, 36);
    h[36..40].copy_from_slice(&s.to_be_bytes());
    let mut img = Vec::new();
    img.extend_from_slice(&f);
    img.extend_from_slice(&h);
    img.extend(std::iter::repeat_n(0xffu8, bat_bytes));
    img.extend_from_slice(&f);
    std::fs::write(path, img).unwrap();
}

#[test]
fn other_block_sizes_read_and_write_as_qemu() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b512k.vhd");
    let p = p.to_str().unwrap();
    handmade_vhd(p, 5 << 20, 512 << 10);
    let model = model_run("vpc", p, 21, 40);
    assert_eq!(qemu_raw(p, "vpc"), model);
    // And QEMU's writes into it read back in qimg.
    ok(
        "qemu-io",
        &["-f", "vpc", "-c", "write -P 0x5a 700k 900k", p],
    );
    let d = qimg_open("vpc", p, true);
    assert!(read_all(d.as_ref()) == qemu_raw(p, "vpc"));
    assert_eq!(d.info().unwrap().cluster_size, Some(512 << 10));
}
