//! bochs: QEMU's and bximage's samples decode to MANIFEST.md's sha256; images bximage makes at
//! test time read back as the source and as qemu-img reads them; map as qemu-img; other modes
//! and hostile headers refused with typed errors.
mod common;
mod rofmt;
use common::{have_qemu, ok, serial};
use qimg_core::ErrorCode::{Corrupt, ReadOnly, Unsupported, WrongFormat};
use qimg_core::LayerStatus;
use rofmt::{assert_rejected, file, have, open_ro, read_all, sample, sha256};

#[test]
fn samples_decode_to_manifest_sha() {
    for (name, size, sha) in [
        (
            "qemu-iotests/empty.bochs",
            1032192,
            "85e614bc2ef17bec493b849dbeea34687ba52d7b1fedc4e5fc3729b0fb059aad",
        ),
        (
            "generated/bximage-growing.bochs",
            8388608,
            "b60cb9db0c85cf7b22fc79a0dbe5c49d633521ececb4b779d066c16fb8b68625",
        ),
    ] {
        let Some(p) = sample(name) else { return };
        let d = open_ro("bochs", &p).unwrap();
        assert_eq!(d.virtual_size(), size, "{name}");
        assert_eq!(sha256(&read_all(&*d)), sha, "{name}");
    }
}

/// 8 MiB with data, holes and partial sectors of zeros, so bitmaps have both states.
fn payload() -> Vec<u8> {
    let mut v = vec![0u8; 8 << 20];
    let mut x = 0x1234_5678u32;
    for (i, chunk) in v.chunks_mut(4096).enumerate() {
        if i % 7 == 3 || (i / 64) % 3 == 1 {
            continue;
        }
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    }
    v
}

#[test]
fn bximage_growing_reads_back_like_source_and_qemu() {
    let _g = serial();
    if !have("bximage", "bximage") || !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = file(&dir, "p.raw", &payload());
    let img = dir.path().join("g.bochs");
    let img = img.to_str().unwrap();
    let out = common::run(
        "bximage",
        &["-func=convert", "-imgmode=growing", "-q", &src, img],
    );
    assert!(out.status.success());
    let d = open_ro("bochs", img).unwrap();
    let data = read_all(&*d);
    assert_eq!(data, std::fs::read(&src).unwrap());
    let q = dir.path().join("q.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "bochs",
            "-O",
            "raw",
            img,
            q.to_str().unwrap(),
        ],
    );
    assert_eq!(data, std::fs::read(&q).unwrap());
    // Unaligned reads across extents and bitmaps.
    let mut b = vec![0u8; 1_000_001];
    d.read(12_345, &mut b).unwrap();
    assert_eq!(b, data[12_345..12_345 + b.len()]);
    // qemu-img map: one data extent, no offset.
    let m = d.block_status(0, d.virtual_size()).unwrap();
    assert_eq!(m.len(), 1);
    assert!(matches!(
        m[0].status,
        LayerStatus::Data {
            host_offset: None,
            ..
        }
    ));
    assert_eq!(d.write(0, &[0u8; 512]).unwrap_err().code, ReadOnly);
}

#[test]
fn writable_open_and_flat_images_are_refused() {
    let Some(p) = sample("qemu-iotests/empty.bochs") else {
        return;
    };
    let s = common::storage(&p, true, false);
    let e = match qimg_formats::open_driver(
        "bochs",
        s,
        &qimg_formats::OpenOptions {
            read_only: false,
            ..Default::default()
        },
    ) {
        Err(e) => e,
        Ok(_) => panic!("writable open accepted"),
    };
    assert_eq!(e.code, ReadOnly);
    assert!(e.message.ends_with("Image is read-only"), "{}", e.message);
    let dir = tempfile::tempdir().unwrap();
    let flat = file(&dir, "flat.img", &vec![0u8; 1 << 20]);
    assert_rejected("bochs", &flat, &[WrongFormat], "flat image");
    // bximage's other modes: flat (no header, as above) and sparse (its own magic).
    if have("bximage", "bximage") {
        let src = file(&dir, "s.raw", &payload()[..2 << 20]);
        for (mode, code) in [("flat", WrongFormat), ("sparse", Unsupported)] {
            let out = dir.path().join(format!("m.{mode}"));
            let out = out.to_str().unwrap();
            let o = common::run(
                "bximage",
                &[
                    "-func=convert",
                    &format!("-imgmode={mode}"),
                    "-q",
                    &src,
                    out,
                ],
            );
            assert!(o.status.success());
            assert_rejected("bochs", out, &[code], mode);
        }
    }
}

/// A valid v2 growing header: 1 MiB disk, 4 KiB extents (256 entries), all unallocated.
fn good() -> Vec<u8> {
    let mut b = vec![0u8; 512 + 256 * 4];
    b[..22].copy_from_slice(b"Bochs Virtual HD Image");
    b[32..39].copy_from_slice(b"Redolog");
    b[48..55].copy_from_slice(b"Growing");
    b[64..68].copy_from_slice(&0x0002_0000u32.to_le_bytes());
    b[68..72].copy_from_slice(&512u32.to_le_bytes());
    b[72..76].copy_from_slice(&256u32.to_le_bytes());
    b[76..80].copy_from_slice(&512u32.to_le_bytes());
    b[80..84].copy_from_slice(&4096u32.to_le_bytes());
    b[88..96].copy_from_slice(&(1u64 << 20).to_le_bytes());
    b[512..].fill(0xff);
    b
}

fn with(f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = good();
    f(&mut b);
    b
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn hostile_headers_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "good.bochs", &good());
    assert_eq!(
        read_all(&*open_ro("bochs", &p).unwrap()),
        vec![0u8; 1 << 20]
    );
    let cases: Vec<(&str, Vec<u8>, qimg_core::ErrorCode)> = vec![
        ("bad magic", with(|b| b[0] = b'b'), WrongFormat),
        (
            "bad version",
            with(|b| put32(b, 64, 0x0003_0000)),
            WrongFormat,
        ),
        ("not a redolog", with(|b| b[32] = b'X'), WrongFormat),
        (
            "undoable subtype",
            with(|b| b[48..56].copy_from_slice(b"Undoable")),
            Unsupported,
        ),
        (
            "volatile subtype",
            with(|b| b[48..56].copy_from_slice(b"Volatile")),
            Unsupported,
        ),
        ("huge catalog", with(|b| put32(b, 72, 0x0100_0000)), Corrupt),
        (
            "catalog past the file",
            with(|b| put32(b, 72, 0x10_0000)),
            Corrupt,
        ),
        ("extent 256", with(|b| put32(b, 80, 256)), Corrupt),
        (
            "extent not a power of two",
            with(|b| put32(b, 80, 5000)),
            Corrupt,
        ),
        ("extent 16 MiB", with(|b| put32(b, 80, 16 << 20)), Corrupt),
        ("bitmap 0", with(|b| put32(b, 76, 0)), Corrupt),
        ("bitmap 4 GiB", with(|b| put32(b, 76, u32::MAX)), Corrupt),
        (
            "catalog too small for the disk",
            with(|b| b[88..96].copy_from_slice(&(1u64 << 40).to_le_bytes())),
            Corrupt,
        ),
        (
            "header size past the file",
            with(|b| put32(b, 68, u32::MAX)),
            Corrupt,
        ),
        ("header size too small", with(|b| put32(b, 68, 8)), Corrupt),
        ("truncated header", good()[..100].to_vec(), Corrupt),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let p = file(&dir, &format!("h{i}.bochs"), &bytes);
        assert_rejected("bochs", &p, &[code], what);
    }
}

#[test]
fn catalog_entries_past_the_file_read_as_zeros() {
    // A huge stored extent number points past the end: QEMU reads zeros there, so do we.
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "far.bochs", &with(|b| put32(b, 512, 0xffff_fffe)));
    let d = open_ro("bochs", &p).unwrap();
    let mut buf = vec![1u8; 4096];
    d.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
}
