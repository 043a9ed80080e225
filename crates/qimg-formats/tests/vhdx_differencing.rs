//! Differencing VHDX images (which QEMU refuses) read through their parent: fully present,
//! partially present (sector bitmap), zero and not-present blocks, checked against a model and
//! against libvhdi reading the same child with the same parent. The child is assembled here
//! from a qimg-made image (no tool on Linux writes differencing VHDX).
#[allow(dead_code)] // this binary uses only `storage`
mod common;
use common::storage;
use qimg_formats::vhdx::metadata::{Metadata, ParentLocator};
use qimg_formats::vhdx::Guid;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// The current header's data write GUID as `{xxxxxxxx-xxxx-...}`.
fn data_guid(b: &[u8]) -> String {
    let seq = |o: usize| u64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap());
    let h = if seq(0x10000) > seq(0x20000) {
        0x10000
    } else {
        0x20000
    };
    format!("{{{}}}", Guid::read(b, h + 32).to_text())
}

#[test]
fn differencing_child_reads_through_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let pp = dir.path().join("parent.vhdx");
    let cp = dir.path().join("child.vhdx");
    let (pp, cp) = (pp.to_str().unwrap(), cp.to_str().unwrap());
    let size = 8 * MIB;
    // Parent: every byte patterned.
    let mut parent_data = vec![0u8; size as usize];
    parent_data
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i / 4096) as u8 | 1);
    {
        let s = storage(pp, false, true);
        let o = CreateOptions {
            size,
            block_size: Some(MIB),
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
        d.write(0, &parent_data).unwrap();
        d.close().unwrap();
    }
    // Child: made as a dynamic image, then turned into a differencing one.
    {
        let s = storage(cp, false, true);
        let o = CreateOptions {
            size,
            block_size: Some(MIB),
            block_state_zero: Some(false),
            ..Default::default()
        };
        create_image("vhdx", s, &o).unwrap();
    }
    let pbytes = std::fs::read(pp).unwrap();
    let mut c = std::fs::read(cp).unwrap();
    let bat = u64::from_le_bytes(c[0x30000 + 32..0x30000 + 40].try_into().unwrap()) as usize;
    let md = u64::from_le_bytes(c[0x30000 + 64..0x30000 + 72].try_into().unwrap()) as usize;
    let meta = Metadata {
        block_size: MIB as u32,
        leave_blocks_allocated: false,
        has_parent: true,
        disk_size: size,
        page83: Guid::random(),
        logical_sector: 512,
        physical_sector: 512,
        parent: Some(ParentLocator {
            entries: vec![
                ("parent_linkage".into(), data_guid(&pbytes)),
                ("relative_path".into(), ".\\parent.vhdx".into()),
            ],
        }),
    };
    let mb = meta.encode();
    c[md..md + mb.len()].copy_from_slice(&mb);
    // Payload: block 0 fully present (0xc0), block 1 partially present (0xc1 in its first 4 KiB
    // and sectors 16..24; the rest from the parent), block 2 zero, the rest from the parent.
    let data_at = c.len();
    c.resize(data_at + 3 * MIB as usize, 0);
    c[data_at..data_at + MIB as usize].fill(0xc0);
    c[data_at + MIB as usize..data_at + 2 * MIB as usize].fill(0xc1);
    let bitmap_at = data_at + 2 * MIB as usize;
    c[bitmap_at + 256] = 0xff; // chunk sectors 2048..2056 = block 1 sectors 0..8
    c[bitmap_at + 258] = 0xff; // block 1 sectors 16..24
    put64(&mut c, bat, data_at as u64 | 6);
    put64(&mut c, bat + 8, (data_at as u64 + MIB) | 7);
    put64(&mut c, bat + 16, 2);
    let chunk_ratio = (1u64 << 23) * 512 / MIB;
    put64(&mut c, bat + chunk_ratio as usize * 8, bitmap_at as u64 | 6);
    std::fs::write(cp, &c).unwrap();

    let mut want = parent_data.clone();
    want[..MIB as usize].fill(0xc0);
    want[MIB as usize..MIB as usize + 4096].fill(0xc1);
    want[MIB as usize + 8192..MIB as usize + 12288].fill(0xc1);
    want[2 * MIB as usize..3 * MIB as usize].fill(0);

    let parent = open_driver(
        "vhdx",
        storage(pp, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let child = open_driver(
        "vhdx",
        storage(cp, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let info = child.info().unwrap();
    assert_eq!(info.backing_file.as_deref(), Some("./parent.vhdx"));
    assert_eq!(info.backing_format.as_deref(), Some("vhdx"));
    child.set_backing(Some(parent)).unwrap();
    let mut got = vec![0u8; size as usize];
    child.read(0, &mut got).unwrap();
    assert!(
        got == want,
        "qimg reads the differencing image through its parent"
    );
    // Block status: present data, then unallocated holes where the parent decides.
    let ext = child.block_status(MIB, MIB).unwrap();
    assert!(ext.len() >= 4, "{ext:?}");
    drop(child);
    // Writable opens of a differencing image are refused (reading only).
    let e = open_driver(
        "vhdx",
        storage(cp, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert_eq!(e.code.as_str(), "ERR_QIMG_UNSUPPORTED");

    // libvhdi reads the same child with the same parent.
    let py = "import pyvhdi,sys\np=pyvhdi.file()\np.open(sys.argv[2])\nf=pyvhdi.file()\nf.open(sys.argv[1])\nf.set_parent(p)\nsys.stdout.buffer.write(f.read_buffer(f.get_media_size()))\n";
    match Command::new("/usr/bin/python3")
        .args(["-c", py, cp, pp])
        .output()
    {
        Ok(o) if o.status.success() => {
            // libvhdi agrees everywhere but in the ZERO block: the spec defines its contents as
            // zeros (so does qimg), libvhdi 20210425 reads it from the parent.
            let m = MIB as usize;
            assert_eq!(o.stdout.len(), want.len());
            assert!(
                o.stdout[..2 * m] == want[..2 * m],
                "libvhdi agrees on blocks 0-1"
            );
            assert!(
                o.stdout[3 * m..] == want[3 * m..],
                "libvhdi agrees on blocks 3-7"
            );
        }
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            eprintln!("SKIP: python3-libvhdi is not installed")
        }
        Ok(o) => panic!("pyvhdi: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => eprintln!("SKIP: /usr/bin/python3 is missing"),
    }
}
