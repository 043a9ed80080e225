//! vhdx against qemu-img and independent readers: creation matching QEMU's layout for every
//! subformat and option, images each side writes read back identically on the other (checked by
//! `qemu-img check` and `compare`), 7-Zip and libvhdi reading what qimg writes, QEMU's sample
//! images (including the dirty-log one, replayed in memory on a read-only open), and power cuts
//! at every write of a sequence of metadata-changing writes.
#[path = "common/blockfmt.rs"]
mod blockfmt;
mod common;
use blockfmt::*;
use common::{have_qemu, run, serial, storage};
use qimg_core::{BlockDriver, RepairMode, Storage};
use qimg_formats::{open_driver, CreateOptions, OpenOptions};
use std::io::Write;
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

fn opts(size: u64, sub: &str, bs: u64, log: u64, zero: Option<bool>) -> CreateOptions {
    CreateOptions {
        size,
        subformat: Some(sub.to_string()),
        block_size: (bs != 0).then_some(bs),
        log_size: (log != 0).then_some(log),
        block_state_zero: zero,
        ..Default::default()
    }
}

fn qemu_o(sub: &str, bs: u64, log: u64, zero: Option<bool>) -> String {
    let mut o = format!("subformat={sub}");
    if bs != 0 {
        o += &format!(",block_size={bs}");
    }
    if log != 0 {
        o += &format!(",log_size={log}");
    }
    if let Some(z) = zero {
        o += if z {
            ",block_state_zero=on"
        } else {
            ",block_state_zero=off"
        };
    }
    o
}

/// The option matrix: (size, subformat, block_size, log_size, block_state_zero).
fn matrix() -> Vec<(u64, &'static str, u64, u64, Option<bool>)> {
    vec![
        (100 * MIB, "dynamic", 0, 0, None),
        (100 * MIB, "dynamic", 0, 0, Some(false)),
        (64 * MIB + 512, "dynamic", MIB, 2 * MIB, Some(true)),
        (40 * MIB, "dynamic", 32 * MIB, 0, Some(false)),
        (40 * MIB, "fixed", 0, 0, None),
        (40 * MIB, "fixed", 2 * MIB, 3 * MIB, Some(false)),
        (3 << 30, "dynamic", 0, 0, None),
        // Rounded as qemu-img rounds them: 512 KiB → 1 MiB blocks, 512 MiB → 256 MiB, a
        // 1500 KiB log → 2 MiB.
        (24 * MIB, "dynamic", 512 << 10, 1500 << 10, None),
        (24 * MIB, "fixed", 512 * MIB, 0, Some(false)),
    ]
}

/// sha256 of every guest byte through qimg, streamed through `sha256sum`.
fn qimg_sha(d: &dyn BlockDriver) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let size = d.virtual_size();
    let mut buf = vec![0u8; 16 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        d.read(off, &mut buf[..n]).unwrap();
        stdin.write_all(&buf[..n]).unwrap();
        off += n as u64;
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn create_matches_qemu_layout_and_info() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (size, sub, bs, log, zero) in matrix() {
        let ours = dir.path().join("ours.vhdx");
        let theirs = dir.path().join("theirs.vhdx");
        let (o, t) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
        let what = qemu_o(sub, bs, log, zero);
        qimg_create("vhdx", o, opts(size, sub, bs, log, zero));
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vhdx",
                "-o",
                &what,
                t,
                &size.to_string(),
            ],
        );
        let (a, b) = (std::fs::read(o).unwrap(), std::fs::read(t).unwrap());
        assert_eq!(a.len(), b.len(), "{what}: file length");
        // Same log, BAT and metadata placement; same BAT; same metadata items except page 83.
        let rt = |x: &[u8], i: usize| {
            u64::from_le_bytes(x[0x30000 + 16 + i * 32 + 16..][..8].try_into().unwrap()) as usize
        };
        assert_eq!(
            (rt(&a, 0), rt(&a, 1)),
            (rt(&b, 0), rt(&b, 1)),
            "{what}: regions"
        );
        let (bat, md) = (rt(&a, 0), rt(&a, 1));
        assert_eq!(a[bat..md], b[bat..md], "{what}: BAT");
        assert_eq!(a[md..md + 0x10010], b[md..md + 0x10010], "{what}: metadata");
        assert_eq!(a[md + 0x10020..md + 0x10028], b[md + 0x10020..md + 0x10028]);
        assert_eq!(
            a[0x10040..0x10050],
            b[0x10040..0x10050],
            "{what}: log fields"
        );
        ok("qemu-img", &["check", "-f", "vhdx", o]);
        let (mut ia, mut ib) = (qemu_info(o, "vhdx"), qemu_info(t, "vhdx"));
        for i in [&mut ia, &mut ib] {
            let m = i.as_object_mut().unwrap();
            for k in ["filename", "children", "actual-size"] {
                m.remove(k);
            }
        }
        assert_eq!(ia, ib, "{what}: info");
        let d = qimg_open("vhdx", t, true);
        assert_eq!(d.virtual_size(), ib["virtual-size"].as_u64().unwrap());
        assert_eq!(
            d.info().unwrap().cluster_size,
            ib["cluster-size"].as_u64(),
            "{what}"
        );
        assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
    }
}

#[test]
fn create_refuses_bad_options_as_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.vhdx");
    let p = p.to_str().unwrap();
    for (o, code) in [
        (
            opts(MIB, "dynamic", 3 * MIB, 0, None),
            "ERR_QIMG_INVALID_ARGUMENT",
        ),
        (
            opts(MIB, "dynamic", 5 * MIB + 1, 0, None),
            "ERR_QIMG_INVALID_ARGUMENT",
        ),
        (
            opts(MIB, "differencing", 0, 0, None),
            "ERR_QIMG_INVALID_ARGUMENT",
        ),
        (opts(MIB, "bogus", 0, 0, None), "ERR_QIMG_INVALID_ARGUMENT"),
        (
            opts(65 << 40, "dynamic", 0, 0, None),
            "ERR_QIMG_INVALID_ARGUMENT",
        ),
        (
            CreateOptions {
                log_size: Some(0),
                ..opts(MIB, "dynamic", 0, 0, None)
            },
            "ERR_QIMG_INVALID_ARGUMENT",
        ),
    ] {
        let s = storage(p, false, true);
        let e = qimg_formats::create_image("vhdx", s, &o).unwrap_err();
        assert_eq!(e.code.as_str(), code, "{o:?}: {e}");
    }
}

#[test]
fn qimg_writes_qemu_and_independent_readers_agree() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, (size, sub, bs, log, zero)) in matrix().into_iter().enumerate() {
        if size > 1 << 30 {
            continue;
        }
        let img = dir.path().join("w.vhdx");
        let p = img.to_str().unwrap();
        qimg_create("vhdx", p, opts(size, sub, bs, log, zero));
        let model = model_run("vhdx", p, 0x9e37 + i as u64, 40);
        let what = qemu_o(sub, bs, log, zero);
        let o = run("qemu-img", &["check", "-f", "vhdx", p]);
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            qemu_raw(p, "vhdx") == model,
            "{what}: QEMU reads what qimg wrote"
        );
        let raw = dir.path().join("model.raw");
        std::fs::write(&raw, &model).unwrap();
        ok(
            "qemu-img",
            &[
                "compare",
                "-f",
                "vhdx",
                "-F",
                "raw",
                p,
                raw.to_str().unwrap(),
            ],
        );
        // 7-Zip reads VHDX on its own (but fails on a disk size that is not whole MiB, on
        // QEMU's images too, so those are left to libvhdi).
        // Nor a fixed image whose one block reaches past the end of the file (QEMU's layout
        // for a disk smaller than the block: "Unexpected end of archive" on QEMU's image too).
        let block = if bs == 0 {
            8 * MIB
        } else {
            bs.next_multiple_of(MIB).min(256 * MIB)
        };
        if size % MIB != 0 || (sub == "fixed" && zero == Some(false) && size < block) {
            eprintln!("SKIP 7zz: {what}: 7-Zip rejects this layout (QEMU's too)");
        } else if Command::new("7zz").arg("i").output().is_ok() {
            let o = Command::new("7zz")
                .args(["e", "-so", "-tVHDX", p])
                .output()
                .unwrap();
            assert!(o.status.success(), "{what}: 7zz failed");
            assert!(o.stdout == model, "{what}: 7-Zip reads what qimg wrote");
        } else {
            eprintln!("SKIP: 7zz is not installed (apt-get install 7zip)");
        }
        // libvhdi (python3-libvhdi).
        let py = "import pyvhdi,sys\nf=pyvhdi.file()\nf.open(sys.argv[1])\nn=f.get_media_size()\nsys.stdout.buffer.write(f.read_buffer(n))\n";
        match Command::new("/usr/bin/python3")
            .args(["-c", py, p])
            .output()
        {
            Ok(o) if o.status.success() => {
                assert!(o.stdout == model, "{what}: libvhdi reads what qimg wrote")
            }
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") => {
                eprintln!("SKIP: python3-libvhdi is not installed")
            }
            Ok(o) => panic!("{what}: pyvhdi: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => eprintln!("SKIP: /usr/bin/python3 is missing"),
        }
    }
}

#[test]
fn qemu_writes_qimg_reads() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let mut data = vec![0u8; 70 << 20];
    let mut rng = Rng(7);
    for chunk in data.chunks_mut(256 << 10) {
        if rng.below(3) != 0 {
            let b = rng.below(255) as u8 + 1;
            chunk
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = b ^ (i as u8));
        }
    }
    std::fs::write(&src, &data).unwrap();
    for (_, sub, bs, log, zero) in matrix() {
        let what = qemu_o(sub, bs, log, zero);
        let img = dir.path().join("q.vhdx");
        let p = img.to_str().unwrap();
        ok(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "vhdx",
                "-o",
                &what,
                src.to_str().unwrap(),
                p,
            ],
        );
        let d = qimg_open("vhdx", p, true);
        assert!(
            read_all(d.as_ref()) == data,
            "{what}: qimg reads QEMU's image"
        );
        assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
        drop(d);
        // And qimg keeps writing into QEMU's image; QEMU reads the result.
        let d = qimg_open("vhdx", p, false);
        let patch = vec![0x5au8; 3 << 20];
        d.write(60 << 20, &patch).unwrap();
        d.close().unwrap();
        drop(d);
        let mut want = data.clone();
        want[60 << 20..63 << 20].copy_from_slice(&patch);
        ok("qemu-img", &["check", "-f", "vhdx", p]);
        assert!(
            qemu_raw(p, "vhdx") == want,
            "{what}: QEMU reads qimg's update"
        );
    }
}

/// The bunzipped sample `name`, or `None` (with the reason printed) when ../shared is absent.
fn sample(name: &str, dir: &std::path::Path) -> Option<String> {
    let src = format!(
        "{}/../../../shared/samples/qemu-iotests/{name}.bz2",
        env!("CARGO_MANIFEST_DIR")
    );
    if !std::path::Path::new(&src).exists() {
        eprintln!("SKIP: sample {src} is absent");
        return None;
    }
    let out = dir.join(name);
    let o = Command::new("bunzip2").args(["-kc", &src]).output().ok()?;
    assert!(o.status.success(), "bunzip2 {src}");
    std::fs::write(&out, o.stdout).unwrap();
    Some(out.to_str().unwrap().to_string())
}

#[test]
fn hyper_v_dynamic_sample_reads_as_the_manifest_says() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = sample("iotest-dynamic-1G.vhdx", dir.path()) else {
        return;
    };
    let d = qimg_open("vhdx", &p, true);
    assert_eq!(d.virtual_size(), 1 << 30);
    assert_eq!(d.info().unwrap().cluster_size, Some(32 << 20));
    assert_eq!(
        qimg_sha(d.as_ref()),
        "d3d112d8dab7fd360609f7d5a7b769904b7a2a7d7b6b8c535f65a23293c05478"
    );
    let mut b = vec![0u8; 4096];
    d.read(33 << 20, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0x96));
}

#[test]
fn dirty_log_sample_replays_in_memory_read_only_and_in_place_read_write() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = sample("iotest-dirtylog-10G-4M.vhdx", dir.path()) else {
        return;
    };
    const RAW_SHA: &str = "179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f";
    let before = std::fs::read(&p).unwrap();
    // Read-only: the log is replayed in memory; the file is not touched.
    let d = qimg_open("vhdx", &p, true);
    assert_eq!(d.virtual_size(), 10 << 30);
    let mut b = vec![0u8; 1 << 20];
    d.read(17 << 20, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == 0xa5),
        "17..18 MiB only present after replay"
    );
    assert_eq!(qimg_sha(d.as_ref()), RAW_SHA);
    let r = d.check(RepairMode::None).unwrap();
    assert_eq!(r.corruptions, 1, "{r:?}");
    drop(d);
    assert!(
        std::fs::read(&p).unwrap() == before,
        "read-only open modified the file"
    );
    if have_qemu() {
        // QEMU refuses the read-only open of the same file.
        let o = run("qemu-img", &["info", "-f", "vhdx", &p]);
        assert!(
            !o.status.success(),
            "qemu-img info on a dirty log should fail"
        );
    }
    // Read-write: replayed into the file, as QEMU does; then QEMU agrees.
    let d = qimg_open("vhdx", &p, false);
    assert_eq!(d.check(RepairMode::None).unwrap().corruptions_fixed, 1);
    d.close().unwrap();
    drop(d);
    let d = qimg_open("vhdx", &p, true);
    assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
    assert_eq!(qimg_sha(d.as_ref()), RAW_SHA);
    drop(d);
    if have_qemu() {
        ok("qemu-img", &["check", "-f", "vhdx", &p]);
        // QEMU's own replay of an untouched copy gives the same bytes.
        let q = dir.path().join("qemu.vhdx");
        std::fs::write(&q, &before).unwrap();
        let q = q.to_str().unwrap();
        let _ = run("qemu-img", &["check", "-r", "all", "-f", "vhdx", q]);
        ok("qemu-img", &["compare", "-f", "vhdx", "-F", "vhdx", &p, q]);
    }
}

#[test]
fn power_cut_at_every_write_of_metadata_changes_replays_clean() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.vhdx");
    let p = img.to_str().unwrap();
    let bs = MIB;
    qimg_create("vhdx", p, opts(16 * MIB, "dynamic", bs, 0, None));
    {
        let d = qimg_open("vhdx", p, false);
        d.write(0, &vec![1u8; 2 << 20]).unwrap();
        d.close().unwrap();
    }
    let orig = std::fs::read(p).unwrap();
    // Metadata-changing writes: allocations in three flush cycles, each going through the log.
    let op = |d: &dyn BlockDriver| {
        let _ = d.write(MIB, &vec![2u8; 3 << 20]);
        let _ = d.flush();
        let _ = d.write(8 * MIB, &vec![3u8; 4096]);
        let _ = d.flush();
        let _ = d.write(12 * MIB, &vec![4u8; 2 << 20]);
        let _ = d.flush();
    };
    let total = crash_run("vhdx", p, &orig, usize::MAX, 0, &op);
    let (mut cases, mut dirty) = (0, 0);
    for k in 0..=total {
        for j in 0..12 {
            crash_run("vhdx", p, &orig, k, j, &op);
            cases += 1;
            // QEMU replays qimg's log on its own (check -r all on a copy).
            let q = format!("{p}.qemu");
            if have_qemu() {
                std::fs::copy(p, &q).unwrap();
                let o = run("qemu-img", &["check", "-r", "all", "-f", "vhdx", &q]);
                assert!(
                    o.status.success(),
                    "cut at {k}+{j}: QEMU replay: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            // Read-only open replays in memory; read-write open replays in place: same bytes.
            let rod = qimg_open("vhdx", p, true);
            dirty += rod.check(RepairMode::None).unwrap().corruptions;
            let ro = read_all(rod.as_ref());
            drop(rod);
            let d = qimg_open("vhdx", p, false);
            assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0);
            d.close().unwrap();
            drop(d);
            let rw = read_all(qimg_open("vhdx", p, true).as_ref());
            assert!(
                ro == rw,
                "cut at {k}+{j}: in-memory and in-place replay differ"
            );
            // Every range holds its old or its new contents.
            for (off, len, old, new) in [
                (0u64, MIB, 1u8, 1u8),
                (MIB, MIB, 1, 2),
                (2 * MIB, 2 * MIB, 0, 2),
                (8 * MIB, 4096, 0, 3),
                (12 * MIB, 2 * MIB, 0, 4),
            ] {
                let r = &rw[off as usize..(off + len) as usize];
                assert!(
                    r.iter().all(|&x| x == old) || r.iter().all(|&x| x == new),
                    "cut at {k}+{j}: range at {off} is neither old nor new"
                );
            }
            if have_qemu() {
                let o = run("qemu-img", &["check", "-f", "vhdx", p]);
                assert!(
                    o.status.success(),
                    "cut at {k}+{j}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert!(qemu_raw(p, "vhdx") == rw, "cut at {k}+{j}: QEMU differs");
                assert!(
                    qemu_raw(&q, "vhdx") == rw,
                    "cut at {k}+{j}: QEMU's replay differs from qimg's"
                );
            }
        }
    }
    assert!(cases > 20);
    // Some cuts left a log to replay (the cases the log exists for).
    assert!(dirty > 0, "no cut left a dirty log");
    eprintln!("{cases} cuts, {dirty} with a log to replay");
}

/// Open with a storage whose writes fail after the `n`th: the error surfaces, and the file
/// still opens, replays and checks clean.
#[test]
fn failing_writes_surface_and_leave_a_clean_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("f.vhdx");
    let p = img.to_str().unwrap();
    qimg_create("vhdx", p, opts(8 * MIB, "dynamic", MIB, 0, None));
    let orig = std::fs::read(p).unwrap();
    let mut n = 0;
    loop {
        std::fs::write(p, &orig).unwrap();
        let st = std::sync::Arc::new(FailAfter {
            inner: storage(p, false, false),
            left: std::sync::atomic::AtomicUsize::new(n),
        });
        let d = open_driver(
            "vhdx",
            st,
            &OpenOptions {
                read_only: false,
                ..Default::default()
            },
        )
        .unwrap();
        let res = d
            .write(0, &vec![7u8; 3 << 20])
            .and_then(|_| d.flush())
            .and_then(|_| d.write(5 * MIB, &vec![8u8; 4096]))
            .and_then(|_| d.close());
        drop(d);
        let back = read_all(qimg_open("vhdx", p, true).as_ref());
        let d = qimg_open("vhdx", p, false);
        assert_eq!(d.check(RepairMode::None).unwrap().corruptions, 0, "n={n}");
        d.close().unwrap();
        for (off, len, new) in [(0, 3 * MIB, 7u8), (5 * MIB, 4096, 8)] {
            let r = &back[off as usize..(off + len) as usize];
            assert!(
                r.iter().all(|&x| x == 0) || r.iter().all(|&x| x == new),
                "n={n}: range at {off} torn"
            );
        }
        if res.is_ok() {
            assert!(back[..3 << 20].iter().all(|&x| x == 7));
            break;
        }
        assert!(n < 200, "never completed");
        n += 1;
    }
    assert!(n > 5, "the sequence made only {n} writes");
}

/// A storage whose writes start failing (with an I/O error) after `left` more succeed.
#[derive(Debug)]
struct FailAfter {
    inner: std::sync::Arc<dyn Storage>,
    left: std::sync::atomic::AtomicUsize,
}

impl FailAfter {
    fn go(&self) -> qimg_core::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.left
            .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
            .map(|_| ())
            .map_err(|_| qimg_core::Error::new(qimg_core::ErrorCode::Io, "injected write failure"))
    }
}

impl Storage for FailAfter {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> qimg_core::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> qimg_core::Result<()> {
        self.go()?;
        self.inner.write_at(buf, offset)
    }
    fn size(&self) -> qimg_core::Result<u64> {
        self.inner.size()
    }
    fn truncate(&self, size: u64) -> qimg_core::Result<()> {
        self.go()?;
        self.inner.truncate(size)
    }
    fn flush(&self) -> qimg_core::Result<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, length: u64) -> qimg_core::Result<()> {
        self.go()?;
        self.inner.discard(offset, length)
    }
    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> qimg_core::Result<()> {
        self.go()?;
        self.inner.write_zeroes(offset, length, may_unmap)
    }
    fn allocate(&self, offset: u64, length: u64) -> qimg_core::Result<()> {
        self.go()?;
        self.inner.allocate(offset, length)
    }
    fn allocated_bytes(&self) -> qimg_core::Result<u64> {
        self.inner.allocated_bytes()
    }
    fn data_run(&self, offset: u64, length: u64) -> qimg_core::Result<qimg_core::storage::DataRun> {
        self.inner.data_run(offset, length)
    }
    fn read_only(&self) -> bool {
        false
    }
}
