//! Malformed VDI headers, one per limit QEMU enforces (plus qimg's own bounds on the block map):
//! each is refused with a typed error and QEMU's message, and qemu-img refuses it too.
mod common;
use common::{assert_qemu_refuses, have_qemu, refused, run, serial, storage};
use qimg_core::ErrorCode;
use qimg_formats::{open_driver, OpenOptions};

type Patch = fn(&mut Vec<u8>);

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn hostile_headers_are_refused_with_typed_errors() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vdi");
    let p = dir.path().join("bad.vdi");
    let (bs, ps) = (base.to_str().unwrap(), p.to_str().unwrap());
    let o = run("qemu-img", &["create", "-q", "-f", "vdi", bs, "4M"]);
    assert!(o.status.success());
    let orig = std::fs::read(bs).unwrap();
    // (what, patch, code, message, qemu-img refuses too)
    let cases: Vec<(&str, Patch, ErrorCode, &str, bool)> = vec![
        (
            "signature",
            |b| put32(b, 0x40, 0x1234_5678),
            ErrorCode::WrongFormat,
            "Image not in VDI format (bad signature 12345678)",
            true,
        ),
        (
            "version",
            |b| put32(b, 0x44, 0x0002_0000),
            ErrorCode::Unsupported,
            "unsupported VDI image (version 2.0)",
            true,
        ),
        (
            "bmap offset",
            |b| put32(b, 0x154, 0x201),
            ErrorCode::Unsupported,
            "unsupported VDI image (unaligned block map offset 0x201)",
            true,
        ),
        (
            "data offset",
            |b| put32(b, 0x158, 0x401),
            ErrorCode::Unsupported,
            "unsupported VDI image (unaligned data offset 0x401)",
            true,
        ),
        (
            "sector size",
            |b| put32(b, 0x168, 4096),
            ErrorCode::Unsupported,
            "unsupported VDI image (sector size 4096 is not 512)",
            true,
        ),
        (
            "block size",
            |b| put32(b, 0x178, 2 << 20),
            ErrorCode::Unsupported,
            "unsupported VDI image (block size 2097152 is not 1048576)",
            true,
        ),
        (
            "disk size",
            |b| b[0x170..0x178].copy_from_slice(&(5u64 << 20).to_le_bytes()),
            ErrorCode::Unsupported,
            "unsupported VDI image (disk size 5242880, image bitmap has room for 4194304)",
            true,
        ),
        (
            "link uuid",
            |b| b[0x1a8] = 1,
            ErrorCode::Unsupported,
            "unsupported VDI image (non-NULL link UUID)",
            true,
        ),
        (
            "parent uuid",
            |b| b[0x1b8] = 1,
            ErrorCode::Unsupported,
            "unsupported VDI image (non-NULL parent UUID)",
            true,
        ),
        (
            "too many blocks",
            |b| {
                put32(b, 0x180, 0x4000_0000);
                b[0x170..0x178].copy_from_slice(&0u64.to_le_bytes());
            },
            ErrorCode::Unsupported,
            "unsupported VDI image (too many blocks 1073741824, max is 1073741823)",
            true,
        ),
        (
            "map beyond the file",
            |b| {
                put32(b, 0x180, 0x3fff_ffff);
            },
            ErrorCode::Corrupt,
            "VDI block map (offset 0x200, 1073741823 entries) lies outside the image file",
            false,
        ),
        (
            "allocated count",
            |b| put32(b, 0x184, 5),
            ErrorCode::Corrupt,
            "VDI header counts 5 allocated blocks, more than the 4 the image has",
            false,
        ),
        (
            "short file",
            |b| b.truncate(100),
            ErrorCode::WrongFormat,
            "Image not in VDI format (file too short)",
            true,
        ),
    ];
    assert!(cases.len() >= 8);
    for (what, patch, code, msg, qemu_refuses) in cases {
        let mut b = orig.clone();
        patch(&mut b);
        std::fs::write(&p, &b).unwrap();
        let e = refused("vdi", ps, what);
        assert_eq!((e.code, e.message.as_str()), (code, msg), "{what}");
        if qemu_refuses {
            assert_qemu_refuses("vdi", ps, what);
        }
    }
}

#[test]
fn hostile_map_entries_are_contained() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.vdi");
    let ps = p.to_str().unwrap();
    assert!(run("qemu-img", &["create", "-q", "-f", "vdi", ps, "4M"])
        .status
        .success());
    let mut b = std::fs::read(ps).unwrap();
    // Block 0 points far past the end of the file; block 1 is "discarded".
    put32(&mut b, 512, 0x3fff_0000);
    put32(&mut b, 516, 0xffff_fffe);
    std::fs::write(ps, &b).unwrap();
    let d = open_driver(
        "vdi",
        storage(ps, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = vec![1u8; 2 << 20];
    d.read(0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&x| x == 0),
        "past-the-end and discarded blocks read as zeros"
    );
    let r = d.check(qimg_core::RepairMode::None).unwrap();
    let o = run("qemu-img", &["check", "-f", "vdi", ps]);
    assert_eq!(o.status.code(), Some(2));
    let theirs: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .map(str::to_string)
        .collect();
    assert_eq!(r.messages, theirs);
    assert_eq!(r.corruptions, 1);
}

#[test]
fn data_area_over_the_block_map_opens_read_only_only() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.vdi");
    let ps = p.to_str().unwrap();
    assert!(run("qemu-img", &["create", "-q", "-f", "vdi", ps, "4M"])
        .status
        .success());
    let mut b = std::fs::read(ps).unwrap();
    put32(&mut b, 0x158, 0x200);
    std::fs::write(ps, &b).unwrap();
    let e = open_driver(
        "vdi",
        storage(ps, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .err()
    .expect("opened writable");
    assert_eq!(e.code, ErrorCode::Corrupt);
    assert!(
        e.message.contains("overlaps the block map"),
        "{}",
        e.message
    );
    open_driver(
        "vdi",
        storage(ps, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn corrupt_maps_open_read_only_only_and_a_lagging_count_never_shares_a_slot() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.vdi");
    let ps = p.to_str().unwrap();
    assert!(run("qemu-img", &["create", "-q", "-f", "vdi", ps, "4M"])
        .status
        .success());
    let qio = [
        "-f",
        "vdi",
        "-c",
        "write -P 1 0 1M",
        "-c",
        "write -P 2 1M 1M",
        "-c",
        "write -P 3 2M 1M",
    ];
    assert!(run("qemu-io", &[&qio[..], &[ps]].concat()).status.success());
    let orig = std::fs::read(ps).unwrap();
    // A shared slot: writable open refused, read-only open fine.
    let mut b = orig.clone();
    put32(&mut b, 516, 0);
    std::fs::write(ps, &b).unwrap();
    let e = open_driver(
        "vdi",
        storage(ps, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .err()
    .expect("opened writable");
    assert_eq!(e.code, ErrorCode::Corrupt);
    assert_eq!(
        e.message,
        "VDI block map is corrupt (block index 0 also used by 0); open it read-only"
    );
    open_driver(
        "vdi",
        storage(ps, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Blocks 0 and 2 only (slots 0 and 2), count 2: QEMU would put the next block in slot 2.
    let mut b = orig.clone();
    put32(&mut b, 516, 0xffff_ffff);
    put32(&mut b, 0x184, 2);
    std::fs::write(ps, &b).unwrap();
    assert!(run("qemu-img", &["check", "-f", "vdi", ps])
        .status
        .success());
    let d = open_driver(
        "vdi",
        storage(ps, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap();
    d.write(3 << 20, &[4; 4096]).unwrap();
    d.close().unwrap();
    drop(d);
    let o = run("qemu-img", &["check", "-f", "vdi", ps]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = dir.path().join("l.raw");
    assert!(run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vdi",
            "-O",
            "raw",
            ps,
            raw.to_str().unwrap()
        ]
    )
    .status
    .success());
    let r = std::fs::read(&raw).unwrap();
    assert!(r[..1 << 20].iter().all(|&x| x == 1));
    assert!(r[1 << 20..2 << 20].iter().all(|&x| x == 0));
    assert!(
        r[2 << 20..3 << 20].iter().all(|&x| x == 3),
        "block 2 kept its data"
    );
    assert!(r[3 << 20..(3 << 20) + 4096].iter().all(|&x| x == 4));
}
