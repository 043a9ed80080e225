//! O_DIRECT file storage (`cache=none` / `directsync`): unaligned reads and writes (offsets,
//! lengths and memory addresses) against an in-memory model, file sizes kept exact (a write that
//! ends mid-block must not grow the file to the block boundary), and every cache mode parsed.
use qimg_core::direct::{CacheMode, DirectIo};
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::Storage;

/// A deterministic byte pattern (splitmix-like), different per `seed`.
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn open(path: &str, cache: CacheMode, create: bool) -> FileStorage {
    FileStorage::open(
        path,
        &FileOptions {
            read_only: false,
            create,
            cache,
            ..Default::default()
        },
    )
    .expect("open")
}

#[test]
fn cache_modes_parse_as_qemu() {
    assert_eq!(CacheMode::parse("none").unwrap(), CacheMode::None);
    assert_eq!(CacheMode::parse("off").unwrap(), CacheMode::None);
    assert_eq!(CacheMode::parse("writeback").unwrap(), CacheMode::Writeback);
    assert_eq!(
        CacheMode::parse("writethrough").unwrap(),
        CacheMode::Writethrough
    );
    assert_eq!(
        CacheMode::parse("directsync").unwrap(),
        CacheMode::Directsync
    );
    assert_eq!(CacheMode::parse("unsafe").unwrap(), CacheMode::Unsafe);
    let e = CacheMode::parse("bogus").unwrap_err();
    assert_eq!(e.code, qimg_core::ErrorCode::InvalidArgument);
    assert!(
        e.message.contains("Invalid cache option: bogus"),
        "{}",
        e.message
    );
    assert!(CacheMode::Directsync.direct() && CacheMode::Directsync.write_through());
    assert!(CacheMode::None.direct() && !CacheMode::None.write_through());
    assert!(!CacheMode::Writethrough.direct() && CacheMode::Writethrough.write_through());
    assert!(CacheMode::Unsafe.no_flush() && !CacheMode::Writeback.no_flush());
}

#[test]
fn unaligned_io_matches_a_model() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [CacheMode::None, CacheMode::Directsync] {
        let path = dir.path().join(format!("{mode:?}.img"));
        let p = path.to_str().unwrap();
        let s = open(p, mode, true);
        assert!(s.direct_align().is_some());
        let mut model: Vec<u8> = Vec::new();
        // (offset, length): unaligned heads, tails, both, inside one block, across many, past EOF.
        let ops: &[(u64, usize)] = &[
            (0, 1 << 20),
            (3, 5),
            (510, 4),
            (4095, 2),
            (4096, 4096),
            (1000, 70_000),
            ((1 << 20) - 7, 10),
            ((1 << 20) + 3, 1),
            (12_345, 1),
            (5 << 20, 513),
            (65_536, 3 << 20),
        ];
        for (i, &(off, len)) in ops.iter().enumerate() {
            // Misaligned memory as well: a slice starting one byte into a Vec.
            let mut data = pattern(len + 1, i as u64 + 1);
            data.remove(0);
            s.write_at(&data, off).unwrap();
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            assert_eq!(
                s.size().unwrap(),
                model.len() as u64,
                "size after write {i}"
            );
        }
        // Whole-file and odd-range reads agree with the model (zeros past EOF).
        let mut all = vec![0u8; model.len() + 100];
        s.read_at(&mut all, 0).unwrap();
        assert_eq!(&all[..model.len()], &model[..]);
        assert!(all[model.len()..].iter().all(|&b| b == 0));
        for &(off, len) in &[(1u64, 3usize), (4093, 9000), ((1 << 20) - 1, 6)] {
            let mut b = vec![0u8; len];
            s.read_at(&mut b, off).unwrap();
            assert_eq!(&b[..], &model[off as usize..off as usize + len]);
        }
        s.flush().unwrap();
        drop(s);
        // The bytes on disk, read without O_DIRECT.
        assert_eq!(std::fs::read(&path).unwrap(), model);
    }
}

#[test]
fn every_mode_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [
        CacheMode::Writeback,
        CacheMode::None,
        CacheMode::Writethrough,
        CacheMode::Directsync,
        CacheMode::Unsafe,
    ] {
        let path = dir.path().join("m.img");
        let p = path.to_str().unwrap();
        let s = open(p, mode, true);
        let data = pattern((1 << 20) + 3, 7);
        s.write_at(&data, 0).unwrap();
        s.flush().unwrap();
        s.flush_durable().unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_at(&mut back, 0).unwrap();
        assert_eq!(back, data, "{mode:?}");
        assert_eq!(s.size().unwrap(), data.len() as u64);
        assert_eq!(s.cache(), mode);
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), data, "{mode:?}");
    }
}

#[test]
fn probed_alignment_is_a_power_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.img");
    std::fs::write(&path, b"x").unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let a = DirectIo::probe(&f).align();
    assert!(a.is_power_of_two() && (512..=65536).contains(&a), "{a}");
}
