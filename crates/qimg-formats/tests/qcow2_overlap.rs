//! Overlap checks: a hostile mapping that points guest data at metadata (the L1 table, an L2
//! table, the refcount table, a refcount block) makes the write fail with `ERR_QIMG_CORRUPT`, leaves
//! the metadata bytes untouched, and marks the image corrupt so writable opens are refused (as
//! QEMU does). A refcount table that calls a metadata cluster free is caught the same way.
mod common;
use common::{have_qemu, run, serial, storage};
use qimg_core::{BlockDriver, ErrorCode};
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

const CS: u64 = 65536;

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

/// A fresh v3 image with one data cluster at guest 0; returns its bytes and the offsets of
/// (L1 table, first L2 table, refcount table, first refcount block, the data cluster).
fn image(path: &str) -> (Vec<u8>, [u64; 5]) {
    create_image(
        "qcow2",
        storage(path, false, true),
        &CreateOptions {
            size: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = open(path, false).unwrap();
    d.write(0, &vec![5u8; CS as usize]).unwrap();
    d.close().unwrap();
    drop(d);
    let b = std::fs::read(path).unwrap();
    let l1 = be64(&b, 40);
    let l2 = be64(&b, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    let rt = be64(&b, 48);
    let rb = be64(&b, rt as usize);
    let data = be64(&b, l2 as usize) & 0x00ff_ffff_ffff_fe00;
    (b, [l1, l2, rt, rb, data])
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

#[test]
fn data_pointed_at_metadata_is_refused_and_the_image_marked_corrupt() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.qcow2");
    let path = p.to_str().unwrap();
    for (what, target) in [
        ("L1 table", 0usize),
        ("L2 table", 1),
        ("refcount table", 2),
        ("refcount block", 3),
    ] {
        let (mut b, offs) = image(path);
        let [_, l2, ..] = offs;
        let aim = offs[target];
        // The data cluster's L2 entry now claims the metadata cluster (COPIED: written in place).
        b[l2 as usize..l2 as usize + 8].copy_from_slice(&(aim | 1 << 63).to_be_bytes());
        std::fs::write(path, &b).unwrap();
        let d = open(path, false).unwrap();
        let err = d.write(100, &[0xffu8; 4096]).expect_err(what);
        assert_eq!(err.code, ErrorCode::Corrupt, "{what}: {err}");
        assert!(
            err.message.contains("Preventing invalid write on metadata"),
            "{what}: {}",
            err.message
        );
        drop(d);
        let after = std::fs::read(path).unwrap();
        let m = aim as usize;
        // Nothing landed on the metadata cluster.
        assert_eq!(
            &after[m..m + CS as usize],
            &b[m..m + CS as usize],
            "{what} untouched"
        );
        assert_ne!(be64(&after, 72) & 2, 0, "{what}: corrupt bit set");
        let again = open(path, false).err().expect("writable open refused");
        assert_eq!(again.code, ErrorCode::Corrupt, "{what}");
        assert!(
            open(path, true).is_ok(),
            "{what}: read-only open still works"
        );
        if have_qemu() {
            let info = run("qemu-img", &["info", "--output=json", "-U", path]);
            let text = String::from_utf8_lossy(&info.stdout);
            assert!(
                text.contains("\"corrupt\": true"),
                "{what}: qemu-img sees it corrupt: {text}"
            );
        }
    }
}

#[test]
fn a_refcount_table_calling_metadata_free_cannot_hand_it_out_for_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.qcow2");
    let path = p.to_str().unwrap();
    let (mut b, [l1, _, _, rb, _]) = image(path);
    // Refcount of the L1 table's cluster (16-bit entries) set to 0: the allocator may pick it.
    let idx = (l1 / CS) as usize;
    b[rb as usize + 2 * idx..rb as usize + 2 * idx + 2].copy_from_slice(&0u16.to_be_bytes());
    std::fs::write(path, &b).unwrap();
    let d = open(path, false).unwrap();
    // New data clusters: the first free cluster is now the L1 table's.
    let err = d.write(2 * CS, &vec![9u8; CS as usize]).unwrap_err();
    assert_eq!(err.code, ErrorCode::Corrupt, "{err}");
    drop(d);
    let after = std::fs::read(path).unwrap();
    assert_eq!(
        &after[l1 as usize..(l1 + CS) as usize],
        &b[l1 as usize..(l1 + CS) as usize]
    );
}
