//! qcow2 driver against real qemu-img / qemu-io (skips with a printed reason when absent):
//! images QEMU writes read back identically; images the driver writes pass `qemu-img check`
//! and compare equal; hostile headers give typed errors.
mod common;
use common::{have_qemu, run, serial, storage};
use qimg_core::ErrorCode;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};

#[test]
fn reads_what_qemu_wrote() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        "compat=0.10,cluster_size=4096",
        "cluster_size=65536,refcount_bits=1",
        "cluster_size=512,lazy_refcounts=on",
    ] {
        let img = dir.path().join("q.qcow2");
        let raw = dir.path().join("q.raw");
        let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
        assert!(run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", opts, i, "4M"]
        )
        .status
        .success());
        let io = run(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x17 1000 70000",
                "-c",
                "write -z 8192 4096",
                "-c",
                "write -P 0x2e 3M 100k",
                i,
            ],
        );
        assert!(
            io.status.success(),
            "{}",
            String::from_utf8_lossy(&io.stderr)
        );
        assert!(
            run("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", i, r])
                .status
                .success()
        );
        let d = open_driver(
            "qcow2",
            storage(i, true, false),
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut got = vec![0u8; d.virtual_size() as usize];
        d.read(0, &mut got).unwrap();
        assert_eq!(got, std::fs::read(&raw).unwrap(), "{opts}");
    }
}

#[test]
fn qemu_accepts_what_the_driver_wrote() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (compat, cs, bits) in [
        ("1.1", 65536u64, 16u32),
        ("0.10", 1024, 16),
        ("1.1", 512, 64),
        ("1.1", 2 << 20, 4),
    ] {
        let img = dir.path().join("w.qcow2");
        let i = img.to_str().unwrap();
        let st = storage(i, false, true);
        let co = CreateOptions {
            size: 8 << 20,
            compat: Some(compat.into()),
            cluster_size: Some(cs),
            refcount_bits: Some(bits),
            ..Default::default()
        };
        create_image("qcow2", st.clone(), &co).unwrap();
        drop(st);
        let d = open_driver(
            "qcow2",
            storage(i, false, false),
            &OpenOptions {
                read_only: false,
                ..Default::default()
            },
        )
        .unwrap();
        let mut model = vec![0u8; 8 << 20];
        let mut seed = 7u64;
        for _ in 0..40 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (seed >> 20) % (8 << 20);
            let len = ((seed >> 8) % 200_000).min((8 << 20) - off);
            let byte = (seed >> 56) as u8 | 1;
            match seed % 5 {
                0 => {
                    d.write_zeroes(off, len, seed & 8 != 0).unwrap();
                    model[off as usize..(off + len) as usize].fill(0);
                }
                1 => {
                    d.discard(off, len).unwrap();
                    let (a, b) = (off.div_ceil(cs) * cs, (off + len) / cs * cs);
                    if b > a {
                        model[a as usize..b as usize].fill(0);
                    }
                }
                _ => {
                    d.write(off, &vec![byte; len as usize]).unwrap();
                    model[off as usize..(off + len) as usize].fill(byte);
                }
            }
        }
        let mut got = vec![0u8; 8 << 20];
        d.read(0, &mut got).unwrap();
        assert!(
            got == model,
            "driver reads back what it wrote ({compat} {cs} {bits})"
        );
        d.close().unwrap();
        drop(d); // releases the image locks
        let check = run("qemu-img", &["check", i]);
        assert!(
            check.status.success(),
            "qemu-img check: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let raw = dir.path().join("w.raw");
        std::fs::write(&raw, &model).unwrap();
        let cmp = run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "qcow2",
                "-F",
                "raw",
                i,
                raw.to_str().unwrap(),
            ],
        );
        assert!(
            cmp.status.success(),
            "{}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }
}

#[test]
fn hostile_headers_are_typed_errors() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("h.qcow2");
    let i = img.to_str().unwrap();
    create_image(
        "qcow2",
        storage(i, false, true),
        &CreateOptions {
            size: 16 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let good = std::fs::read(&img).unwrap();
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch, ErrorCode)> = vec![
        ("bad magic", Box::new(|b| b[0] = 0), ErrorCode::WrongFormat),
        (
            "version 5",
            Box::new(|b| b[4..8].copy_from_slice(&5u32.to_be_bytes())),
            ErrorCode::Unsupported,
        ),
        (
            "cluster_bits 30",
            Box::new(|b| b[20..24].copy_from_slice(&30u32.to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "L1 size 2^31",
            Box::new(|b| b[36..40].copy_from_slice(&0x8000_0000u32.to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "L1 too small for size",
            Box::new(|b| b[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "refcount order 7",
            Box::new(|b| b[96..100].copy_from_slice(&7u32.to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "no refcount table",
            Box::new(|b| b[56..60].copy_from_slice(&0u32.to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "refcount table past EOF",
            Box::new(|b| b[48..56].copy_from_slice(&(1u64 << 40).to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "header extension overflow",
            Box::new(|b| b[116..120].copy_from_slice(&0xffff_0000u32.to_be_bytes())),
            ErrorCode::Corrupt,
        ),
        (
            "zstd without its incompatible bit",
            Box::new(|b| b[104] = 1),
            ErrorCode::Corrupt,
        ),
        (
            "unknown compression type",
            Box::new(|b| {
                b[104] = 7;
                b[79] |= 8;
            }),
            ErrorCode::Unsupported,
        ),
    ];
    for (name, patch, code) in cases {
        let mut b = good.clone();
        patch(&mut b);
        std::fs::write(&img, &b).unwrap();
        let e = open_driver(
            "qcow2",
            storage(i, true, false),
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .err()
        .unwrap_or_else(|| panic!("{name}: opened"));
        assert_eq!(e.code, code, "{name}: {}", e.message);
    }
}

#[test]
fn zeroing_two_partial_clusters_zeroes_both() {
    // A request with no whole cluster inside, starting in an unallocated cluster and ending in
    // an allocated one: the second part must still be zeroed.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("z.qcow2");
    let i = img.to_str().unwrap();
    create_image(
        "qcow2",
        storage(i, false, true),
        &CreateOptions {
            size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open_driver("qcow2", storage(i, false, false), &OpenOptions::default()).unwrap();
    d.write(70_000, &[7u8; 10_000]).unwrap();
    d.write_zeroes(60_000, 15_000, false).unwrap();
    let mut got = vec![0u8; 20_000];
    d.read(60_000, &mut got).unwrap();
    assert!(got[..15_000].iter().all(|&b| b == 0), "zeroed range");
    assert!(got[15_000..].iter().all(|&b| b == 7), "data after it");
    d.close().unwrap();
}
