//! Hostile qcow2 images: one patched field per limit, each refused with the expected error code
//! (at open, or at the first access of the bad mapping), never a panic. Needs no QEMU.
#[allow(dead_code)]
mod common;
use common::storage;
use qimg_core::{BlockDriver, ErrorCode, RepairMode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

const CS: u64 = 65536;

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

/// A v3 image (64 KiB clusters, 16 MiB) with data at guest offset 0, as bytes.
fn good_image(dir: &std::path::Path) -> Vec<u8> {
    let img = dir.join("good.qcow2");
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
    let d = open_driver("qcow2", storage(i, false, false), &OpenOptions::default()).unwrap();
    d.write(0, &vec![0x5a; 2 * CS as usize]).unwrap();
    d.close().unwrap();
    drop(d);
    std::fs::read(&img).unwrap()
}

/// Host offset of the first L1 entry, of the L2 table it points to, and of the first refcount
/// table entry.
fn layout(b: &[u8]) -> (usize, usize, usize) {
    let l1 = be64(b, 40) as usize;
    let l2 = (be64(b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let rt = be64(b, 48) as usize;
    (l1, l2, rt)
}

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

/// What a case expects.
enum Expect {
    /// Open (read-only and read-write) fails with this code.
    Open(ErrorCode),
    /// Read-only open succeeds; read-write open fails with this code.
    Writable(ErrorCode),
    /// Opens; reading guest offset 0 fails with this code.
    Read(ErrorCode),
    /// Opens read-write; writing a new cluster fails with this code.
    Write(ErrorCode),
}

type Patch = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn hostile_images_give_typed_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    let (l1, l2, rt) = layout(&good);
    assert!(l2 > 0 && l2 % CS as usize == 0);
    use Expect::*;
    let cases: Vec<(&str, Patch, Expect)> = vec![
        (
            "bad magic",
            Box::new(|b| b[0] = 0),
            Open(ErrorCode::WrongFormat),
        ),
        (
            "version 1",
            Box::new(|b| put32(b, 4, 1)),
            Open(ErrorCode::Unsupported),
        ),
        (
            "version 4",
            Box::new(|b| put32(b, 4, 4)),
            Open(ErrorCode::Unsupported),
        ),
        (
            "cluster_bits 8",
            Box::new(|b| put32(b, 20, 8)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "cluster_bits 22",
            Box::new(|b| put32(b, 20, 22)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "header_length 100",
            Box::new(|b| put32(b, 100, 100)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "header_length past the cluster",
            Box::new(|b| put32(b, 100, 1 << 20)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "size 2^63",
            Box::new(|b| put64(b, 24, 1 << 63)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "size u64::MAX",
            Box::new(|b| put64(b, 24, u64::MAX)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "size larger than the L1 table maps",
            Box::new(|b| put64(b, 24, 1 << 40)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "L1 size over 32 MiB",
            Box::new(|b| put32(b, 36, (32 << 20) / 8 + 1)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "L1 size 2^32-1",
            Box::new(|b| put32(b, 36, u32::MAX)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "L1 offset misaligned",
            Box::new(|b| {
                let v = be64(b, 40) + 8;
                put64(b, 40, v)
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "L1 offset 2^56",
            Box::new(|b| put64(b, 40, 1 << 56)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "L1 offset past EOF",
            Box::new(|b| put64(b, 40, 1 << 40)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "refcount table over 8 MiB",
            Box::new(|b| put32(b, 56, (8 << 20) / CS as u32 + 1)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "no refcount table",
            Box::new(|b| put32(b, 56, 0)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "refcount table misaligned",
            Box::new(|b| put64(b, 48, CS + 512)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "refcount table past EOF",
            Box::new(|b| put64(b, 48, 1 << 40)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "refcount order 7",
            Box::new(|b| put32(b, 96, 7)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "crypt_method 1 (AES) without a key",
            Box::new(|b| put32(b, 32, 1)),
            Open(ErrorCode::InvalidArgument),
        ),
        (
            "crypt_method 2 (LUKS) without the crypto extension",
            Box::new(|b| put32(b, 32, 2)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "crypt_method 3",
            Box::new(|b| put32(b, 32, 3)),
            Open(ErrorCode::Unsupported),
        ),
        (
            "65537 snapshots",
            Box::new(|b| {
                put32(b, 60, 65537);
                put64(b, 64, CS * 3);
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "snapshot table misaligned",
            Box::new(|b| {
                put32(b, 60, 1);
                put64(b, 64, 12345);
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "unknown incompatible bit 20",
            Box::new(|b| b[72 + 5] |= 0x10),
            Open(ErrorCode::Unsupported),
        ),
        (
            "external data file bit",
            Box::new(|b| b[79] |= 1 << 2),
            Open(ErrorCode::Unsupported),
        ),
        (
            "extended L2 with 256-byte subclusters",
            Box::new(|b| {
                b[79] |= 1 << 4;
                put32(b, 20, 13);
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "backing name longer than 1023",
            Box::new(|b| {
                put64(b, 8, 2048);
                put32(b, 16, 2000);
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "backing name outside the first cluster",
            Box::new(|b| {
                put64(b, 8, CS - 4);
                put32(b, 16, 16);
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "backing name offset 2^63",
            Box::new(|b| {
                put64(b, 8, 1 << 63);
                put32(b, 16, 16);
            }),
            Open(ErrorCode::Corrupt),
        ),
        (
            "header extension longer than the cluster",
            Box::new(|b| put32(b, 116, 0xffff_fff0)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "truncated header",
            Box::new(|b| b.truncate(50)),
            Open(ErrorCode::Corrupt),
        ),
        (
            "corrupt bit",
            Box::new(|b| b[79] |= 1 << 1),
            Writable(ErrorCode::Corrupt),
        ),
        (
            "L2 entry past EOF",
            Box::new(move |b| put64(b, l2, (1u64 << 40) | (1 << 63))),
            Read(ErrorCode::Corrupt),
        ),
        (
            "L2 entry misaligned",
            Box::new(move |b| {
                let v = be64(b, l2) + 512;
                put64(b, l2, v)
            }),
            Read(ErrorCode::Corrupt),
        ),
        (
            "L1 entry past EOF",
            Box::new(move |b| put64(b, l1, (1u64 << 40) | (1 << 63))),
            Read(ErrorCode::Corrupt),
        ),
        (
            "L1 entry misaligned",
            Box::new(move |b| {
                let v = be64(b, l1) + 512;
                put64(b, l1, v)
            }),
            Read(ErrorCode::Corrupt),
        ),
        (
            "refcount block misaligned",
            Box::new(move |b| {
                let v = be64(b, rt) + 512;
                put64(b, rt, v)
            }),
            Write(ErrorCode::Corrupt),
        ),
        (
            "refcount block at 2^56",
            Box::new(move |b| put64(b, rt, 1 << 56)),
            Write(ErrorCode::Corrupt),
        ),
    ];
    assert!(cases.len() >= 20);
    let img = dir.path().join("h.qcow2");
    let i = img.to_str().unwrap();
    for (name, patch, expect) in cases {
        let mut b = good.clone();
        patch(&mut b);
        std::fs::write(&img, &b).unwrap();
        let code = |r: qimg_core::Result<()>| r.err().map(|e| (e.code, e.message));
        match expect {
            Open(c) => {
                for ro in [true, false] {
                    let e = open(i, ro)
                        .err()
                        .unwrap_or_else(|| panic!("{name}: opened (read_only={ro})"));
                    assert_eq!(e.code, c, "{name}: {}", e.message);
                }
            }
            Writable(c) => {
                let d = open(i, true).unwrap_or_else(|e| panic!("{name}: {}", e.message));
                let mut buf = vec![0u8; 4096];
                d.read(0, &mut buf).unwrap();
                assert_eq!(buf, vec![0x5a; 4096], "{name}");
                drop(d);
                let e = open(i, false)
                    .err()
                    .unwrap_or_else(|| panic!("{name}: rw open"));
                assert_eq!(e.code, c, "{name}: {}", e.message);
            }
            Read(c) => {
                let d = open(i, true).unwrap_or_else(|e| panic!("{name}: {}", e.message));
                let mut buf = vec![0u8; 4096];
                let got = code(d.read(0, &mut buf));
                assert_eq!(got.map(|g| g.0), Some(c), "{name}");
                // Block status and check see the same bad mapping without panicking.
                let _ = d.block_status(0, 1 << 20);
                let _ = d.check(RepairMode::None);
            }
            Write(c) => {
                let d = open(i, false).unwrap_or_else(|e| panic!("{name}: {}", e.message));
                let got = code(d.write(8 << 20, &[1u8; 512]).and_then(|_| d.flush()));
                assert_eq!(got.as_ref().map(|g| g.0), Some(c), "{name}: {got:?}");
                let _ = d.check(RepairMode::None);
            }
        }
    }
}

#[test]
fn unknown_feature_messages_name_unknown_bits() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = good_image(dir.path());
    b[77] |= 0x10; // bit 20: unnamed
    let img = dir.path().join("f.qcow2");
    std::fs::write(&img, &b).unwrap();
    let e = open(img.to_str().unwrap(), true).err().unwrap();
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert!(
        e.message.starts_with("Unsupported qcow2 feature(s): "),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("Unknown incompatible feature: 100000"),
        "{}",
        e.message
    );
}

#[test]
fn corrupt_bit_message_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = good_image(dir.path());
    b[79] |= 1 << 1;
    let img = dir.path().join("c.qcow2");
    std::fs::write(&img, &b).unwrap();
    let e = open(img.to_str().unwrap(), false).err().unwrap();
    assert_eq!(
        e.message,
        "qcow2: Image is corrupt; cannot be opened read/write"
    );
    let d = open(img.to_str().unwrap(), true).unwrap();
    let info = d.info().unwrap();
    assert_eq!(info.format_specific.unwrap()["data"]["corrupt"], true);
}

#[test]
fn random_header_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    let img = dir.path().join("r.qcow2");
    let i = img.to_str().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..4 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = ((seed >> 33) % 128) as usize;
            b[at] = (seed >> 13) as u8;
        }
        std::fs::write(&img, &b).unwrap();
        let Ok(d) = open(i, true) else { continue };
        let mut buf = vec![0u8; 65536];
        let _ = d.read(0, &mut buf);
        let _ = d.block_status(0, d.virtual_size().min(1 << 30));
        let _ = d.check(RepairMode::None);
        let _ = d.info();
        assert!(be32(&b, 0) == 0x5146_49fb);
    }
}
