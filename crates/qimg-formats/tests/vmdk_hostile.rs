//! Malformed VMDK images: each header field QEMU bounds (and the ones qimg bounds beyond it) is
//! refused with a typed error and no large allocation; the sample images of ../shared/samples
//! decode as MANIFEST.md says (afl9 refused as QEMU refuses it).
mod common;
use common::{have_qemu, run, serial, storage};
use qimg_core::{BlockDriver, ErrorCode, RepairMode};
use qimg_formats::{open_driver, OpenOptions};

type Patch = fn(&mut Vec<u8>);

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

fn open(p: &str) -> qimg_core::Result<std::sync::Arc<dyn BlockDriver>> {
    open_driver(
        "vmdk",
        storage(p, true, false),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

#[test]
fn hostile_headers_are_refused_with_typed_errors() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vmdk");
    let p = dir.path().join("bad.vmdk");
    let (bs, ps) = (base.to_str().unwrap(), p.to_str().unwrap());
    assert!(run("qemu-img", &["create", "-q", "-f", "vmdk", bs, "4M"])
        .status
        .success());
    let orig = std::fs::read(bs).unwrap();
    // (what, patch, code, qemu-img refuses it too)
    let cases: Vec<(&str, Patch, ErrorCode, bool)> = vec![
        (
            "version 4",
            |b| put32(b, 4, 4),
            ErrorCode::Unsupported,
            true,
        ),
        (
            "1024 entries per table",
            |b| put32(b, 44, 1024),
            ErrorCode::Corrupt,
            true,
        ),
        (
            "zero grain size",
            |b| put64(b, 20, 0),
            ErrorCode::Corrupt,
            true,
        ),
        (
            "4 GiB grains",
            |b| put64(b, 20, 1 << 23),
            ErrorCode::Corrupt,
            true,
        ),
        (
            "directory past the end",
            |b| put64(b, 56, 1 << 40),
            ErrorCode::Corrupt,
            false,
        ),
        (
            "huge capacity (L1 size)",
            |b| put64(b, 12, 1 << 44),
            ErrorCode::Corrupt,
            true,
        ),
        (
            "capacity past 2^53 bytes",
            |b| put64(b, 12, 1 << 50),
            ErrorCode::Corrupt,
            false,
        ),
        (
            "compression algorithm 7",
            |b| {
                put32(b, 8, 0x3_0003);
                b[77] = 7;
            },
            ErrorCode::Unsupported,
            false,
        ),
        (
            "directory in a footer that is missing",
            |b| put64(b, 56, u64::MAX),
            ErrorCode::Corrupt,
            true,
        ),
        (
            "descriptor past the end",
            |b| put64(b, 28, 1 << 30),
            ErrorCode::Corrupt,
            false,
        ),
        (
            "truncated header",
            |b| b.truncate(100),
            ErrorCode::WrongFormat,
            true,
        ),
        (
            "COWD (VMware 3)",
            |b| b[..4].copy_from_slice(b"COWD"),
            ErrorCode::Unsupported,
            false,
        ),
    ];
    for (what, patch, code, qemu_refuses) in cases {
        let mut b = orig.clone();
        patch(&mut b);
        std::fs::write(ps, &b).unwrap();
        let e = open(ps).err().unwrap_or_else(|| panic!("{what}: opened"));
        assert_eq!(e.code, code, "{what}: {}", e.message);
        let q = run("qemu-img", &["info", "-f", "vmdk", ps]);
        if qemu_refuses {
            assert!(!q.status.success(), "{what}: qemu-img accepts it");
        }
    }
    // A grain table entry pointing past the end: open works, check reports what QEMU reports.
    let mut b = orig.clone();
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(b[gd..gd + 4].try_into().unwrap()) as usize * 512;
    put32(&mut b, gt + 4, 0x0100_0000);
    std::fs::write(ps, &b).unwrap();
    let d = open(ps).unwrap();
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!(r.corruptions, 1);
    let q = run("qemu-img", &["check", "-f", "vmdk", ps]);
    // QEMU stops at the first bad grain with EINVAL ("Check failed", exit 1); qimg reports it
    // as a corruption (exit 2) with the same message.
    assert_eq!(q.status.code(), Some(1));
    let theirs: Vec<String> = String::from_utf8_lossy(&q.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&q.stdout).lines())
        .filter(|l| l.starts_with("ERROR"))
        .map(str::to_string)
        .collect();
    assert_eq!(r.messages, theirs);
    let mut buf = vec![0u8; 65536];
    assert!(
        d.read(65536, &mut buf).is_err(),
        "reading past the end is an error, not zeros"
    );
}

#[test]
fn hostile_descriptors_are_refused() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.vmdk");
    let ps = p.to_str().unwrap();
    let head = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n";
    let cases: Vec<(String, ErrorCode)> = vec![
        (
            format!("{head}createType=\"vmfsRaw\"\nRW 8 FLAT \"x\" 0\n"),
            ErrorCode::Unsupported,
        ),
        (
            format!("{head}createType=\"monolithicFlat\"\nRW eight FLAT \"x\" 0\n"),
            ErrorCode::Corrupt,
        ),
        (
            format!("{head}createType=\"monolithicFlat\"\nRW 8 FLAT x 0\n"),
            ErrorCode::Corrupt,
        ),
        (
            format!("{head}createType=\"monolithicFlat\"\nRW 8 WEIRD \"x\"\n"),
            ErrorCode::Unsupported,
        ),
        (
            format!("{head}createType=\"monolithicFlat\"\n"),
            ErrorCode::Corrupt,
        ),
        (
            format!("{head}CID=zz\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"x\" 0\n"),
            ErrorCode::Corrupt,
        ),
        (
            format!("{head}createType=\"monolithicFlat\"\nRW 18446744073709551615 FLAT \"x\" 0\n"),
            ErrorCode::Corrupt,
        ),
        (
            "# Disk DescriptorFile\n\u{ff}\u{fe}".to_string(),
            ErrorCode::Corrupt,
        ),
    ];
    for (text, code) in cases {
        let mut raw = text.clone().into_bytes();
        if text.ends_with('\u{fe}') {
            raw.truncate(22);
            raw.extend_from_slice(&[0xff, 0xfe, b'\n']);
        }
        std::fs::write(ps, &raw).unwrap();
        let e = open(ps).err().unwrap_or_else(|| panic!("{text:?}: opened"));
        assert_eq!(e.code, code, "{text:?}: {}", e.message);
    }
    // A valid descriptor whose extent is not attached: reads fail with a typed error.
    std::fs::write(
        ps,
        format!("{head}createType=\"monolithicFlat\"\nRW 8 FLAT \"x\" 0\n"),
    )
    .unwrap();
    let d = open(ps).unwrap();
    assert_eq!(d.extent_files(), vec!["x".to_string()]);
    let mut b = [0u8; 512];
    assert_eq!(
        d.read(0, &mut b).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

fn samples() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples");
    if p.join("MANIFEST.md").exists() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/samples is absent");
        None
    }
}

fn sha256(b: &[u8], dir: &std::path::Path) -> String {
    let f = dir.join("sha.in");
    std::fs::write(&f, b).unwrap();
    let o = run("sha256sum", &[f.to_str().unwrap()]);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn samples_decode_as_the_manifest_says() {
    let _g = serial();
    let Some(s) = samples() else { return };
    let dir = tempfile::tempdir().unwrap();
    // bximage's vmware4 (monolithicSparse): sha256 of the decode from MANIFEST.md.
    let bx = s.join("generated/bximage-vmware4.vmdk");
    let d = open(bx.to_str().unwrap()).unwrap();
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read(0, &mut b).unwrap();
    assert_eq!(b.len(), 8388608);
    assert_eq!(
        sha256(&b, dir.path()),
        "b60cb9db0c85cf7b22fc79a0dbe5c49d633521ececb4b779d066c16fb8b68625"
    );
    // afl9: refused as QEMU refuses it ("L1 size too big"), typed.
    let e = open(s.join("qemu-iotests/afl9.vmdk").to_str().unwrap())
        .err()
        .expect("afl9 opened");
    assert_eq!(e.code, ErrorCode::Corrupt);
    assert!(e.message.contains("L1 size too big"), "{}", e.message);
    // iotest-version3: VMware's streamOptimized (directory in the footer), 16 GiB. Compare every
    // allocated grain with QEMU's decode and check the rest is reported unallocated.
    let v3 = s.join("qemu-iotests/iotest-version3.vmdk");
    let v3 = v3.to_str().unwrap();
    let d = open(v3).unwrap();
    assert_eq!(d.virtual_size(), 17179869184);
    if !have_qemu() {
        return;
    }
    // QEMU's decode into a sparse raw file (only its data is written), then every allocated
    // grain compared whole and every other range checked unallocated.
    let qraw = dir.path().join("v3.raw");
    let qraw = qraw.to_str().unwrap();
    let o = run(
        "qemu-img",
        &["convert", "-f", "vmdk", "-O", "raw", v3, qraw],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let qf = std::fs::File::open(qraw).unwrap();
    assert_eq!(qf.metadata().unwrap().len(), d.virtual_size());
    let map = d.block_status(0, d.virtual_size()).unwrap();
    let mut data = 0;
    for e in &map {
        match e.status {
            qimg_core::LayerStatus::Data {
                compressed: true, ..
            } => {
                let mut ours = vec![0u8; e.length as usize];
                d.read(e.start, &mut ours).unwrap();
                let mut theirs = vec![0u8; e.length as usize];
                std::os::unix::fs::FileExt::read_exact_at(&qf, &mut theirs, e.start).unwrap();
                assert!(ours == theirs, "grain at {}", e.start);
                data += e.length;
            }
            qimg_core::LayerStatus::Unallocated => {}
            s => panic!("unexpected {s:?}"),
        }
    }
    let qmap = run("qemu-img", &["map", "--output=json", "-f", "vmdk", v3]);
    let q: Vec<serde_json::Value> = serde_json::from_slice(&qmap.stdout).unwrap();
    let qdata: u64 = q
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(data, qdata, "allocated bytes as qemu-img map");
}
