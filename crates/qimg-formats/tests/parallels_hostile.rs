//! parallels: hostile headers are refused with typed errors, quickly, without large allocations.
#[allow(dead_code)] // only storage(), through rofmt
mod common;
mod rofmt;
use qimg_core::ErrorCode::{Corrupt, WrongFormat};
use rofmt::{assert_rejected, file};

/// A valid v2 header: 64 KiB clusters, 16 entries, 1 MiB, data at 64 KiB; then the BAT.
fn good() -> Vec<u8> {
    let mut b = vec![0u8; 65536];
    b[..16].copy_from_slice(b"WithouFreSpacExt");
    b[16..20].copy_from_slice(&2u32.to_le_bytes());
    b[20..24].copy_from_slice(&16u32.to_le_bytes());
    b[28..32].copy_from_slice(&128u32.to_le_bytes());
    b[32..36].copy_from_slice(&16u32.to_le_bytes());
    b[36..44].copy_from_slice(&2048u64.to_le_bytes());
    b[48..52].copy_from_slice(&128u32.to_le_bytes());
    b
}

fn with(f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = good();
    f(&mut b);
    b
}

#[test]
fn the_good_header_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(&dir, "g.img", &good());
    let d = rofmt::open_ro("parallels", &p).unwrap();
    assert_eq!(d.virtual_size(), 1 << 20);
}

#[test]
fn hostile_headers_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, qimg_core::ErrorCode)> = vec![
        ("bad magic", with(|b| b[0] = b'X'), WrongFormat),
        ("version 3", with(|b| b[16] = 3), WrongFormat),
        ("shorter than a header", good()[..40].to_vec(), Corrupt),
        ("zero cluster", with(|b| b[28..32].fill(0)), Corrupt),
        (
            "1 GiB cluster",
            with(|b| b[28..32].copy_from_slice(&(1u32 << 21).to_le_bytes())),
            Corrupt,
        ),
        (
            "2^31 BAT entries",
            with(|b| b[32..36].copy_from_slice(&(1u32 << 31).to_le_bytes())),
            Corrupt,
        ),
        (
            "BAT larger than the file",
            with(|b| b[32..36].copy_from_slice(&1_000_000u32.to_le_bytes())),
            Corrupt,
        ),
        (
            "size beyond the BAT",
            with(|b| b[36..44].copy_from_slice(&u64::MAX.to_le_bytes())),
            Corrupt,
        ),
        ("v2 data_off zero", with(|b| b[48..52].fill(0)), Corrupt),
        (
            "v2 data_off inside the BAT",
            with(|b| {
                b[32..36].copy_from_slice(&200u32.to_le_bytes());
                b[48..52].copy_from_slice(&1u32.to_le_bytes());
            }),
            Corrupt,
        ),
        (
            "in_use garbage",
            with(|b| b[44..48].copy_from_slice(&0xdeadbeefu32.to_le_bytes())),
            Corrupt,
        ),
        (
            "v1 data_off overlapping the BAT",
            with(|b| {
                b[..16].copy_from_slice(b"WithoutFreeSpace");
                b[32..36].copy_from_slice(&1000u32.to_le_bytes());
                b[36..44].copy_from_slice(&1000u64.to_le_bytes());
                b[48..52].copy_from_slice(&1u32.to_le_bytes());
            }),
            Corrupt,
        ),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let p = file(&dir, &format!("h{i}.img"), &bytes);
        assert_rejected("parallels", &p, &[code], what);
    }
}

#[test]
fn entries_outside_the_file_read_as_zeros_like_qemu() {
    // QEMU reads past the end of the file as zeros; a BAT entry there is only a check finding.
    let dir = tempfile::tempdir().unwrap();
    let b = with(|b| b[64..68].copy_from_slice(&u32::MAX.to_le_bytes()));
    let p = file(&dir, "o.img", &b);
    let d = rofmt::open_ro("parallels", &p).unwrap();
    let data = rofmt::read_all(&*d);
    assert!(data.iter().all(|&x| x == 0));
    let r = d.check(qimg_core::RepairMode::None).unwrap();
    assert_eq!(r.corruptions, 1);
}
