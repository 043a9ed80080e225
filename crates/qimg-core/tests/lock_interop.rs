//! Image locks against real QEMU peers (qemu-img, qemu-io, qemu-nbd from qemu-utils): qimg and
//! QEMU must refuse each other exactly as two QEMU processes do, and `/proc/locks` must show the
//! bytes QEMU takes. Each test skips with a printed reason when a peer is missing.
//!
//! The tests in this file run one at a time (a process-wide mutex): a child forked by one test
//! briefly shares every open file description of the process until it execs, so it could hold
//! the OFD locks of a file another test has just closed.
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::lock::{LockMode, PermSet};
use qimg_core::{ErrorCode, Storage};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// True if `bin` runs; otherwise prints why the calling test skips.
fn have(bin: &str) -> bool {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {bin} is not installed (apt-get install qemu-utils)");
    }
    ok
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("spawn")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Make an image of `fmt` with qemu-img.
fn make_image(path: &str, fmt: &str) {
    let o = run("qemu-img", &["create", "-q", "-f", fmt, path, "16M"]);
    assert!(o.status.success(), "qemu-img create: {}", stderr(&o));
}

fn open(path: &str, read_only: bool, force_share: bool, locking: LockMode) -> FileStorage {
    try_open(path, read_only, force_share, locking).expect("open")
}

fn try_open(
    path: &str,
    read_only: bool,
    force_share: bool,
    locking: LockMode,
) -> qimg_core::Result<FileStorage> {
    FileStorage::open(
        path,
        &FileOptions {
            read_only,
            create: false,
            locking,
            force_share,
            ..Default::default()
        },
    )
}

/// Every lock byte any process holds on `path`, from `/proc/locks` (ranges expanded; adjacent
/// bytes of one owner show there as one merged range).
fn proc_locks(path: &str) -> Vec<i64> {
    let md = std::fs::metadata(path).unwrap();
    let dev = md.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        md.ino()
    );
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut bytes = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: OFDLCK ADVISORY READ -1 fe:00:123 100 101"; blocked waiters have a "->" field.
        let f: Vec<&str> = f.into_iter().filter(|s| *s != "->").collect();
        if f.len() >= 8 && f[1] == "OFDLCK" && f[5] == want {
            let (a, b) = (f[6].parse::<i64>(), f[7].parse::<i64>());
            if let (Ok(a), Ok(b)) = (a, b) {
                bytes.extend(a..=b);
            }
        }
    }
    bytes.sort_unstable();
    bytes
}

/// Wait until `/proc/locks` shows a non-empty set of bytes on `path` that stays the same for
/// 100 ms (QEMU takes its bytes one at a time while it opens the image).
fn settled_locks(path: &str, who: &str) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Vec::new();
    loop {
        let now = proc_locks(path);
        if !now.is_empty() && now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "{who} took no locks on {path}");
        last = now;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A foreground `qemu-nbd` serving `path`, killed by pid when dropped.
struct Nbd(Child);

impl Nbd {
    /// Start `qemu-nbd -k SOCK --persistent EXTRA... -f FMT PATH` and wait until the socket
    /// exists and `/proc/locks` shows its locks on the image.
    fn start(sock: &Path, fmt: &str, path: &str, extra: &[&str]) -> Nbd {
        let mut args = vec!["-k", sock.to_str().unwrap(), "--persistent"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-f", fmt, path]);
        let child = Command::new("qemu-nbd")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn qemu-nbd");
        let nbd = Nbd(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "qemu-nbd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        settled_locks(path, "qemu-nbd");
        nbd
    }
}

impl Drop for Nbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn qimg_bytes_in_proc_locks_are_qemus() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.img");
    std::fs::write(&p, vec![0u8; 65536]).unwrap();
    let ps = p.to_str().unwrap();
    {
        let _s = open(ps, false, false, LockMode::On);
        assert_eq!(proc_locks(ps), [100, 101, 103, 201, 203]);
    }
    {
        let _s = open(ps, true, false, LockMode::On);
        assert_eq!(proc_locks(ps), [100, 201, 203]);
    }
    {
        let _s = open(ps, true, true, LockMode::On);
        assert_eq!(proc_locks(ps), [100]);
    }
    {
        let _s = FileStorage::open_with_perms(ps, &FileOptions::default(), PermSet::INFO).unwrap();
        assert_eq!(proc_locks(ps), [201, 203]);
    }
    {
        let _s = open(ps, false, false, LockMode::Off);
        assert!(proc_locks(ps).is_empty());
    }
    assert!(proc_locks(ps).is_empty());
}

/// The same bytes as QEMU's own opens of a qcow2 image (read-write, `-r`, `-r -U`).
#[test]
fn qemu_io_takes_the_same_bytes_on_qcow2() {
    let _g = serial();
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.qcow2");
    let ps = p.to_str().unwrap();
    make_image(ps, "qcow2");
    for (args, read_only, force_share) in [
        (&[][..], false, false),
        (&["-r"][..], true, false),
        (&["-r", "-U"][..], true, true),
    ] {
        let mut child = Command::new("qemu-io")
            .args(args)
            .args(["-f", "qcow2", ps])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu-io");
        let theirs = settled_locks(ps, "qemu-io");
        drop(child.stdin.take()); // EOF: qemu-io quits
        child.wait().unwrap();
        let s = open(ps, read_only, force_share, LockMode::On);
        assert_eq!(proc_locks(ps), theirs, "qemu-io {args:?}");
        drop(s);
    }
}

#[test]
fn qimg_read_write_blocks_qemu_img_info() {
    let _g = serial();
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img.qcow2");
    let ps = p.to_str().unwrap();
    make_image(ps, "qcow2");
    let s = open(ps, false, false, LockMode::Auto);
    let o = run("qemu-img", &["info", ps]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "Could not open '{ps}': Failed to get shared \"write\" lock\nIs another process using the image [{ps}]?"
        )),
        "{err}"
    );
    let o = run("qemu-img", &["info", "-U", ps]);
    assert!(o.status.success(), "info -U: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("file format: qcow2"));
    // Reading for a copy is refused too, whatever the format.
    let o = run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", ps, "/dev/null"],
    );
    assert!(
        stderr(&o).contains("Failed to get shared \"write\" lock"),
        "{}",
        stderr(&o)
    );
    drop(s);
    let o = run("qemu-img", &["info", ps]);
    assert!(o.status.success(), "after close: {}", stderr(&o));
}

#[test]
fn qimg_read_only_blocks_qemu_writers_force_share_does_not() {
    let _g = serial();
    if !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img.raw");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let ps = p.to_str().unwrap();
    let write = || run("qemu-io", &["-f", "raw", "-c", "write 0 512", ps]);
    let s = open(ps, true, false, LockMode::On);
    let o = write();
    assert!(
        stderr(&o).contains("Failed to get \"write\" lock\nIs another process using the image"),
        "{}",
        stderr(&o)
    );
    drop(s);
    let s = open(ps, true, true, LockMode::On);
    let o = write();
    assert!(o.status.success(), "{}", stderr(&o));
    drop(s);
}

#[test]
fn qemu_nbd_read_write_blocks_qimg() {
    let _g = serial();
    if !have("qemu-nbd") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (fmt, rw_msg) in [("raw", "resize"), ("qcow2", "write")] {
        let p = dir.path().join(format!("img.{fmt}"));
        let ps = p.to_str().unwrap();
        make_image(ps, fmt);
        let sock = dir.path().join(format!("{fmt}.sock"));
        let nbd = Nbd::start(&sock, fmt, ps, &[]);
        // qemu-nbd (QEMU 10) holds 100-101 + 203 for raw, 100-101, 103, 201, 203 for qcow2.
        let held = proc_locks(ps);
        assert!(
            held.contains(&101) && held.contains(&203),
            "{fmt}: {held:?}"
        );

        let e = try_open(ps, false, false, LockMode::Auto).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked, "{fmt}: {}", e.message);
        assert_eq!(
            e.message,
            format!("Failed to get \"{rw_msg}\" lock\nIs another process using the image [{ps}]?")
        );
        assert_eq!(e.path.as_deref(), Some(ps));

        let e = try_open(ps, true, false, LockMode::Auto).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert_eq!(
            e.message,
            format!(
                "Failed to get shared \"write\" lock\nIs another process using the image [{ps}]?"
            )
        );

        let s = open(ps, true, true, LockMode::Auto);
        let mut buf = [1u8; 512];
        s.read_at(&mut buf, 0).unwrap();
        drop(s);

        // locking=off ignores them all, as QEMU's file.locking=off.
        let s = open(ps, false, false, LockMode::Off);
        assert_eq!(s.locked(), PermSet::NONE);
        drop(s);
        drop(nbd);
        assert!(proc_locks(ps).is_empty());
        open(ps, false, false, LockMode::On);
    }
}

#[test]
fn qemu_nbd_read_only_shares_reads_refuses_writers() {
    let _g = serial();
    if !have("qemu-nbd") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img.qcow2");
    let ps = p.to_str().unwrap();
    make_image(ps, "qcow2");
    let sock = dir.path().join("ro.sock");
    let nbd = Nbd::start(&sock, "qcow2", ps, &["-r"]);
    assert_eq!(proc_locks(ps), [100, 201, 203]);
    open(ps, true, false, LockMode::On);
    let e = try_open(ps, false, false, LockMode::On).unwrap_err();
    assert!(
        e.message.starts_with("Failed to get \"write\" lock\n"),
        "{}",
        e.message
    );
    drop(nbd);
}

#[test]
fn two_read_write_opens_in_one_process_conflict() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.img");
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    let ps = p.to_str().unwrap();
    let a = open(ps, false, false, LockMode::Auto);
    let e = try_open(ps, false, false, LockMode::Auto).unwrap_err();
    assert_eq!(e.code, ErrorCode::Locked);
    assert!(e.message.starts_with("Failed to get \"write\" lock\n"));
    let e = try_open(ps, true, false, LockMode::Auto).unwrap_err();
    assert!(e
        .message
        .starts_with("Failed to get shared \"write\" lock\n"));
    open(ps, true, true, LockMode::Auto);
    open(ps, false, false, LockMode::Off);
    // create=true on a file in use is refused before the file is emptied.
    let e = FileStorage::open(
        ps,
        &FileOptions {
            read_only: false,
            create: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Locked);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
    drop(a);
    open(ps, false, false, LockMode::Auto);
}

#[test]
fn force_share_needs_read_only() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.img");
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    let e = try_open(p.to_str().unwrap(), false, true, LockMode::Auto).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(
        e.message,
        "force-share=on can only be used with read-only images"
    );
}

#[test]
fn set_perms_changes_bytes_and_rolls_back_on_conflict() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.img");
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    let ps = p.to_str().unwrap();
    let a = open(ps, false, false, LockMode::On);
    // Drop to what QEMU's qemu-io takes for a raw image it writes: hold read+write, share all.
    let qemu_io_raw = PermSet {
        held: 0b0011,
        unshared: 0,
    };
    a.set_perms(qemu_io_raw).unwrap();
    assert_eq!(proc_locks(ps), [100, 101]);
    // Now a force-share reader and a plain one... the plain one still refuses a writer.
    let r = open(ps, true, true, LockMode::On);
    assert!(try_open(ps, true, false, LockMode::On).is_err());
    // Going back to the full write set conflicts with nobody (the reader shares everything).
    a.set_perms(PermSet::READ_WRITE).unwrap();
    drop(r);
    let b = open(ps, true, true, LockMode::On);
    // b may not take write permissions on a read-only open.
    assert_eq!(
        b.set_perms(PermSet::READ_WRITE).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    // b asking to stop sharing write conflicts with a, and b's bytes stay as they were.
    let e = b.set_perms(PermSet::READ_ONLY).unwrap_err();
    assert_eq!(e.code, ErrorCode::Locked);
    assert_eq!(b.locked(), PermSet::FORCE_SHARE);
    assert_eq!(b.perms(), PermSet::FORCE_SHARE);
}
