//! Malformed VHDX images are refused with typed errors, never a panic or an unbounded
//! allocation: bad signatures, headers, region tables, metadata items, BAT entries and logs.
#[allow(dead_code)] // this binary uses only `storage`
mod common;
use common::storage;
use qimg_core::{BlockDriver, RepairMode};
use qimg_formats::vhdx::log::encode_entry;
use qimg_formats::vhdx::Guid;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};

const MIB: usize = 1 << 20;
const H1: usize = 0x10000;
const H2: usize = 0x20000;
const RT1: usize = 0x30000;
const RT2: usize = 0x40000;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
/// Recompute the CRC-32C at `at + 4` over `len` bytes from `at`.
fn recrc(b: &mut [u8], at: usize, len: usize) {
    put32(b, at + 4, 0);
    let c = crc32c::crc32c(&b[at..at + len]);
    put32(b, at + 4, c);
}
fn fix_headers(b: &mut [u8]) {
    recrc(b, H1, 4096);
    recrc(b, H2, 4096);
}
fn fix_regions(b: &mut [u8]) {
    recrc(b, RT1, 65536);
    let rt = b[RT1..RT1 + 65536].to_vec();
    b[RT2..RT2 + 65536].copy_from_slice(&rt);
}

/// A valid 8 MiB dynamic image with 1 MiB blocks and one allocated block, as bytes.
fn image(dir: &std::path::Path) -> Vec<u8> {
    let p = dir.join("base.vhdx");
    let s = storage(p.to_str().unwrap(), false, true);
    let o = CreateOptions {
        size: 8 << 20,
        block_size: Some(1 << 20),
        ..Default::default()
    };
    create_image("vhdx", s.clone(), &o).unwrap();
    let d = open_driver(
        "vhdx",
        s,
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap();
    d.write(0, &[9u8; 4096]).unwrap();
    d.close().unwrap();
    drop(d);
    std::fs::read(p).unwrap()
}

fn bat_at(b: &[u8]) -> usize {
    u64::from_le_bytes(b[RT1 + 32..RT1 + 40].try_into().unwrap()) as usize
}
fn md_at(b: &[u8]) -> usize {
    u64::from_le_bytes(b[RT1 + 64..RT1 + 72].try_into().unwrap()) as usize
}

fn open(
    dir: &std::path::Path,
    b: &[u8],
    ro: bool,
) -> qimg_core::Result<std::sync::Arc<dyn BlockDriver>> {
    let p = dir.join("h.vhdx");
    std::fs::write(&p, b).unwrap();
    open_driver(
        "vhdx",
        storage(p.to_str().unwrap(), ro, false),
        &OpenOptions {
            read_only: ro,
            ..Default::default()
        },
    )
}

#[test]
fn malformed_images_are_refused_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = image(dir.path());
    assert!(
        open(dir.path(), &base, true).is_ok(),
        "the base image opens"
    );
    type Mutate = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutate, &str)> = vec![
        (
            "file signature",
            Box::new(|b| b[7] = b'X'),
            "ERR_QIMG_WRONG_FORMAT",
        ),
        (
            "file shorter than the header section",
            Box::new(|b| b.truncate(MIB / 2)),
            "ERR_QIMG_WRONG_FORMAT",
        ),
        (
            "both header checksums",
            Box::new(|b| {
                b[H1 + 100] ^= 1;
                b[H2 + 100] ^= 1;
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "both header signatures",
            Box::new(|b| {
                b[H1] = 0;
                b[H2] = 0;
                fix_headers(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "header version 2",
            Box::new(|b| {
                b[H1 + 66] = 2;
                b[H2 + 66] = 2;
                fix_headers(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "equal sequence numbers, different headers",
            Box::new(|b| {
                let s = b[H1 + 8..H1 + 16].to_vec();
                b[H2 + 8..H2 + 16].copy_from_slice(&s);
                b[H2 + 20] ^= 0xff;
                fix_headers(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "log offset not 1 MiB aligned",
            Box::new(|b| {
                put64(b, H1 + 72, 0x100200);
                put64(b, H2 + 72, 0x100200);
                fix_headers(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "log inside the header section",
            Box::new(|b| {
                put64(b, H1 + 72, 0);
                put64(b, H2 + 72, 0);
                fix_headers(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "log version 1",
            Box::new(|b| {
                b[H1 + 64] = 1;
                b[H2 + 64] = 1;
                fix_headers(b);
            }),
            "ERR_QIMG_UNSUPPORTED",
        ),
        (
            "both region table checksums",
            Box::new(|b| {
                b[RT1 + 200] ^= 1;
                b[RT2 + 200] ^= 1;
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "region entry count 3000",
            Box::new(|b| {
                put32(b, RT1 + 8, 3000);
                fix_regions(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "BAT region overlapping the metadata region",
            Box::new(|b| {
                let md = md_at(b) as u64;
                put64(b, RT1 + 16 + 16, md);
                fix_regions(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "BAT region overlapping the log",
            Box::new(|b| {
                put64(b, RT1 + 16 + 16, MIB as u64);
                fix_regions(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "metadata region missing",
            Box::new(|b| {
                put32(b, RT1 + 8, 1);
                fix_regions(b);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "unknown required region",
            Box::new(|b| {
                b[RT1 + 48] ^= 0x55;
                put32(b, RT1 + 48 + 28, 1);
                fix_regions(b);
            }),
            "ERR_QIMG_UNSUPPORTED",
        ),
        (
            "metadata signature",
            Box::new(|b| {
                let m = md_at(b);
                b[m] = b'X';
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "block size 3 MiB",
            Box::new(|b| {
                let m = md_at(b);
                put32(b, m + 0x10000, 3 << 20);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "block size 512 MiB",
            Box::new(|b| {
                let m = md_at(b);
                put32(b, m + 0x10000, 512 << 20);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "logical sector size 1024",
            Box::new(|b| {
                let m = md_at(b);
                put32(b, m + 0x10020, 1024);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "disk size 2^50 (beyond 64 TiB)",
            Box::new(|b| {
                let m = md_at(b);
                put64(b, m + 0x10008, 1 << 50);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "disk size needing a bigger BAT",
            Box::new(|b| {
                let m = md_at(b);
                put64(b, m + 0x10008, 1 << 40);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "metadata item outside the region",
            Box::new(|b| {
                let m = md_at(b);
                put32(b, m + 32 + 16, 0x200000);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "metadata item inside the table",
            Box::new(|b| {
                let m = md_at(b);
                put32(b, m + 32 + 16, 0x100);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "unknown required metadata item",
            Box::new(|b| {
                let m = md_at(b);
                b[m + 32 + 64] ^= 0x55;
            }),
            "ERR_QIMG_UNSUPPORTED",
        ),
        (
            "has_parent without a parent locator",
            Box::new(|b| {
                let m = md_at(b);
                put32(b, m + 0x10004, 2);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "metadata entry count 5000",
            Box::new(|b| {
                let m = md_at(b);
                b[m + 10..m + 12].copy_from_slice(&5000u16.to_le_bytes());
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "BAT state 5",
            Box::new(|b| {
                let a = bat_at(b);
                put64(b, a + 8, 5);
            }),
            "ERR_QIMG_CORRUPT",
        ),
        (
            "partially present block in a non-differencing image",
            Box::new(|b| {
                let a = bat_at(b);
                put64(b, a + 8, (20 << 20) | 7);
            }),
            "ERR_QIMG_CORRUPT",
        ),
    ];
    assert!(cases.len() >= 8);
    for (what, f, code) in cases {
        let mut b = base.clone();
        f(&mut b);
        match open(dir.path(), &b, true) {
            Ok(_) => panic!("{what}: opened"),
            Err(e) => assert_eq!(e.code.as_str(), code, "{what}: {e}"),
        }
    }
}

#[test]
fn bat_entries_past_the_end_or_over_metadata_are_found_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let base = image(dir.path());
    for (what, entry) in [
        ("past the end", (64u64 << 20) | 6),
        ("over the BAT", (bat_at(&base) as u64) | 6),
        ("over the header section", 6u64),
    ] {
        let mut b = base.clone();
        let a = bat_at(&b);
        put64(&mut b, a + 16, entry);
        let d = open(dir.path(), &b, true).unwrap();
        let r = d.check(RepairMode::None).unwrap();
        assert!(r.corruptions >= 1, "{what}: {r:?}");
        drop(d);
        let e = open(dir.path(), &b, false).err().expect(what);
        assert_eq!(e.code.as_str(), "ERR_QIMG_CORRUPT", "{what}: {e}");
    }
}

/// Put a log entry (sequence `seq`, writing `sectors`) into `b` and point the headers at it.
fn with_log(b: &mut [u8], flushed: u64, sectors: &[(u64, &[u8])]) {
    let g = Guid::random();
    let e = encode_entry(7, g, 0, flushed, flushed, sectors);
    b[MIB..MIB + e.len()].copy_from_slice(&e);
    b[H1 + 48..H1 + 64].copy_from_slice(&g.0);
    b[H2 + 48..H2 + 64].copy_from_slice(&g.0);
    fix_headers(b);
}

#[test]
fn hostile_logs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = image(dir.path());
    let sector = vec![0xeeu8; 4096];
    let len = base.len() as u64;
    // A valid entry: replayed in memory read-only (file unchanged), in place read-write.
    let mut ok = base.clone();
    let target = (len - 4096, sector.as_slice());
    with_log(&mut ok, len, &[target]);
    let d = open(dir.path(), &ok, true).unwrap();
    assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 1);
    drop(d);
    assert!(std::fs::read(dir.path().join("h.vhdx")).unwrap() == ok);
    let d = open(dir.path(), &ok, false).unwrap();
    d.close().unwrap();
    drop(d);
    let after = std::fs::read(dir.path().join("h.vhdx")).unwrap();
    assert!(after[(len - 4096) as usize..len as usize]
        .iter()
        .all(|&x| x == 0xee));
    // Into the header section.
    let mut b = base.clone();
    with_log(&mut b, len, &[(0x10000, sector.as_slice())]);
    assert_eq!(
        open(dir.path(), &b, true).err().unwrap().code.as_str(),
        "ERR_QIMG_CORRUPT"
    );
    // Into the log itself.
    let mut b = base.clone();
    with_log(&mut b, len, &[(MIB as u64 + 8192, sector.as_slice())]);
    assert_eq!(
        open(dir.path(), &b, true).err().unwrap().code.as_str(),
        "ERR_QIMG_CORRUPT"
    );
    // A flushed file offset past the end: the file was truncated.
    let mut b = base.clone();
    with_log(&mut b, len + (64 << 20), &[target]);
    assert_eq!(
        open(dir.path(), &b, true).err().unwrap().code.as_str(),
        "ERR_QIMG_CORRUPT"
    );
    // A corrupt entry (bad checksum): nothing valid to replay, the image opens as it is.
    let mut b = base.clone();
    with_log(&mut b, len, &[target]);
    b[MIB + 5000] ^= 1;
    let d = open(dir.path(), &b, true).unwrap();
    assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
    drop(d);
    // An entry longer than the log.
    let mut b = base.clone();
    with_log(&mut b, len, &[target]);
    put32(&mut b, MIB + 8, 64 << 20);
    recrc(&mut b, MIB, 8192);
    assert!(open(dir.path(), &b, true).is_ok());
    assert_eq!(le32(&b, MIB), 0x6567_6f6c);
}

/// A log entry that wraps around the end of the circular log is found and replayed.
#[test]
fn a_log_entry_wrapping_around_the_end_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = image(dir.path());
    let len = b.len() as u64;
    let (s1, s2) = (vec![0x31u8; 4096], vec![0x32u8; 4096]);
    let g = Guid::random();
    let log_len = MIB as u64;
    let pos = log_len - 4096;
    let e = encode_entry(
        3,
        g,
        pos,
        len,
        len,
        &[(len - 8192, s1.as_slice()), (len - 4096, s2.as_slice())],
    );
    assert_eq!(e.len(), 3 * 4096);
    b[MIB + pos as usize..2 * MIB].copy_from_slice(&e[..4096]);
    b[MIB..MIB + 8192].copy_from_slice(&e[4096..]);
    b[H1 + 48..H1 + 64].copy_from_slice(&g.0);
    b[H2 + 48..H2 + 64].copy_from_slice(&g.0);
    fix_headers(&mut b);
    let d = open(dir.path(), &b, true).unwrap();
    let mut got = vec![0u8; 8192];
    d.storage().read_at(&mut got, len - 8192).unwrap();
    assert!(got[..4096].iter().all(|&x| x == 0x31) && got[4096..].iter().all(|&x| x == 0x32));
    assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 1);
}
