//! The NBD server (`qimg_core::nbd_server`) against real clients: nbdinfo (`--map` compared with
//! what qemu-nbd serves for the same image), nbdcopy, qemu-img and qemu-io — plus a hand-written
//! hostile client (no real client sends malformed requests on purpose) for the refusals: bad
//! magic, oversized options and requests, writes to a read-only export, writes past the end, and
//! a client that disconnects in the middle of a WRITE.
mod common;
use common::{have_qemu, ok, run, serial, storage};
use qimg_core::nbd::{Address, NbdStorage};
use qimg_core::nbd_server::{Listen, NbdServer, ServerConfig};
use qimg_core::{BlockDriver, Storage};
use qimg_formats::{open_driver, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn have(cmd: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {cmd} is not installed (test/peers/install.sh)");
    }
    ok
}

fn open(path: &Path, format: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    let st = storage(path.to_str().unwrap(), read_only, false);
    open_driver(
        format,
        st,
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap()
}

fn config(name: &str, read_only: bool, persistent: bool) -> ServerConfig {
    ServerConfig {
        export_name: name.into(),
        description: None,
        read_only,
        shared: 0,
        persistent,
        tls: None,
        allocation_depth: false,
    }
}

fn unix_uri(sock: &Path, name: &str) -> String {
    format!("nbd+unix:///{name}?socket={}", sock.display())
}

/// A qcow2 over a qcow2 backing file: data in both layers, a zero cluster, unallocated ranges.
fn chain(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    ok("qemu-img", &["create", "-q", "-f", "qcow2", b, "16M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 0x11 0 3M", b]);
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", t],
    );
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 0x22 1M 1M", t]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -z 2M 64k", t]);
    ok(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x33 9M 100k", t],
    );
    (base, top)
}

fn open_chain(base: &Path, top: &Path, read_only: bool) -> Arc<dyn BlockDriver> {
    let b = open(base, "qcow2", true);
    let t = open(top, "qcow2", read_only);
    t.set_backing(Some(b)).unwrap();
    t
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{p:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `nbdinfo --map` of qimg's export equals qemu-nbd's for the same chain; qemu-img reads it
/// equal to the image, nbdcopy copies it exactly.
#[test]
fn chain_export_matches_qemu_nbd() {
    let _g = serial();
    if !have_qemu() || !have("nbdinfo") || !have("nbdcopy") || !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, top) = chain(dir.path());
    let raw = dir.path().join("top.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            top.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    // qemu-nbd's view first (read-only, shared so nbdinfo can connect twice).
    let qsock = dir.path().join("q.sock");
    let child = Command::new("qemu-nbd")
        .args(["-r", "-A", "-t", "-e", "4", "-f", "qcow2", "-k"])
        .arg(&qsock)
        .arg(&top)
        .spawn()
        .unwrap();
    let q = Kill(child);
    wait_for(&qsock);
    std::thread::sleep(Duration::from_millis(200));
    let qmap = ok("nbdinfo", &["--map", &unix_uri(&qsock, "")]);
    let depth_arg = "--map=qemu:allocation-depth";
    let qdepth = ok("nbdinfo", &[depth_arg, &unix_uri(&qsock, "")]);
    drop(q);

    let d = open_chain(&base, &top, true);
    let sock = dir.path().join("s.sock");
    let mut cfg = config("", true, true);
    cfg.allocation_depth = true;
    let srv = NbdServer::start(d, &Listen::Unix(sock.to_str().unwrap().into()), cfg).unwrap();
    let uri = unix_uri(&sock, "");
    let map = ok("nbdinfo", &["--map", &uri]);
    assert_eq!(map, qmap, "nbdinfo --map: qimg vs qemu-nbd");
    assert!(map.contains("hole,zero") && map.contains("data"), "{map}");
    // qemu:allocation-depth (-A): the same extents and depths as qemu-nbd's.
    let depth = ok("nbdinfo", &[depth_arg, &uri]);
    assert_eq!(
        depth, qdepth,
        "nbdinfo --map=qemu:allocation-depth: qimg vs qemu-nbd"
    );
    assert!(
        depth.contains("local") && depth.contains("backing depth 2") && depth.contains("absent"),
        "{depth}"
    );
    let contexts = ok("nbdinfo", &["--list", &uri]);
    assert!(contexts.contains("qemu:allocation-depth"), "{contexts}");
    let info = ok("nbdinfo", &["--json", &uri]);
    assert!(info.contains("\"export-size\": 16777216"), "{info}");
    assert!(info.contains("\"is_read_only\": true"), "{info}");
    assert!(info.contains("\"can_multi_conn\": true"), "{info}");
    // qemu-img reads the export equal to the converted image.
    ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &uri,
            raw.to_str().unwrap(),
        ],
    );
    let out = dir.path().join("copy.raw");
    ok("nbdcopy", &[&uri, out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&raw).unwrap());
    // Several connections at once (nbdcopy uses multi-conn): still exact.
    let out2 = dir.path().join("copy2.raw");
    ok(
        "nbdcopy",
        &[
            "--connections=4",
            "--requests=8",
            &uri,
            out2.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&out2).unwrap(), std::fs::read(&raw).unwrap());
    srv.close().unwrap();
    assert!(!sock.exists(), "the socket file is removed on close");
}

/// qemu-io writes through a TCP export (named): after the server stops, the image holds them
/// and passes qemu-img check; the server stops by itself once its last client left.
#[test]
fn qemu_io_writes_over_tcp() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w.qcow2");
    let i = img.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", i, "8M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 0x44 0 4M", i]);
    let srv = NbdServer::start(
        open(&img, "qcow2", false),
        &Listen::Tcp("127.0.0.1".into(), 0),
        config("disk", false, false),
    )
    .unwrap();
    let uri = format!("nbd://127.0.0.1:{}/disk", srv.port().unwrap());
    let o = ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x55 64k 1M",
            "-c",
            "write -z 2M 512k",
            "-c",
            "discard 3M 1M",
            "-c",
            "write -P 0x66 7M 1M",
            "-c",
            "flush",
            &uri,
        ],
    );
    assert!(!o.contains("failed"), "{o}");
    // Not persistent: the last client left, so the server stops (and flushes) on its own.
    srv.wait().unwrap();
    assert!(srv.finished());
    drop(srv);
    ok("qemu-img", &["check", i]);
    for (pat, off, len) in [
        ("0x44", "0", "64k"),
        ("0x55", "64k", "1M"),
        ("0x44", "1088k", "960k"),
        ("0", "2M", "512k"),
        ("0x44", "2560k", "512k"),
        ("0", "3M", "1M"),
        ("0", "4M", "3M"),
        ("0x66", "7M", "1M"),
    ] {
        let o = ok(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                &format!("read -P {pat} {off} {len}"),
                i,
            ],
        );
        assert!(
            !o.contains("Pattern verification failed"),
            "{pat} {off}: {o}"
        );
    }
}

/// Locks: while served read-write, qemu-img cannot open the image for writing; after close it can.
#[test]
fn holds_the_image_locks() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("l.raw");
    let i = img.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "raw", i, "1M"]);
    let sock = dir.path().join("l.sock");
    let srv = NbdServer::start(
        open(&img, "raw", false),
        &Listen::Unix(sock.to_str().unwrap().into()),
        config("", false, true),
    )
    .unwrap();
    let o = run("qemu-io", &["-f", "raw", "-c", "write 0 4k", i]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("lock"));
    srv.close().unwrap();
    // The server let go of the driver it was given (its only holder here) as it stopped, so the
    // file is closed and the locks are gone while the handle still exists.
    ok("qemu-io", &["-f", "raw", "-c", "write 0 4k", i]);
    drop(srv);
}

/// qimg's own NBD client against the server: reads, writes, zeroes, block status.
#[test]
fn qimg_client_round_trip() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.raw");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let sock = dir.path().join("c.sock");
    let srv = NbdServer::start(
        open(&img, "raw", false),
        &Listen::Unix(sock.to_str().unwrap().into()),
        config("x", false, true),
    )
    .unwrap();
    let st = NbdStorage::connect(
        &Address::Unix(sock.to_str().unwrap().into()),
        "x",
        false,
        "t",
    )
    .unwrap();
    assert_eq!(st.size().unwrap(), 4 << 20);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    st.write_at(&data, 512 << 10).unwrap();
    let mut back = vec![0u8; 1 << 20];
    st.read_at(&mut back, 512 << 10).unwrap();
    assert_eq!(back, data);
    st.flush().unwrap();
    drop(st);
    assert!(NbdStorage::connect(
        &Address::Unix(sock.to_str().unwrap().into()),
        "y",
        false,
        "t"
    )
    .is_err());
    srv.close().unwrap();
    let f = std::fs::read(&img).unwrap();
    assert_eq!(&f[512 << 10..(512 << 10) + (1 << 20)], &data[..]);
}

// ---- a hand-written client for what no real client sends ----

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

struct Raw(UnixStream);

impl Raw {
    fn connect(sock: &Path) -> Raw {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }
    fn read(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0.read_exact(&mut b).unwrap();
        b
    }
    /// Greeting, client flags (fixed newstyle, no zeroes).
    fn hello(&mut self) {
        let g = self.read(18);
        assert_eq!(&g[..8], b"NBDMAGIC");
        self.0.write_all(&3u32.to_be_bytes()).unwrap();
    }
    fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.0.write_all(&b).unwrap();
    }
    /// One option reply: (type, data).
    fn reply(&mut self) -> (u32, Vec<u8>) {
        let h = self.read(20);
        let len = be32(&h, 16) as usize;
        (be32(&h, 12), self.read(len))
    }
    /// OPT_GO on `name` with structured replies; returns the transmission flags.
    fn go(&mut self, name: &str) -> u16 {
        self.option(8, &[]);
        assert_eq!(self.reply().0, 1);
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.option(7, &d);
        let mut flags = 0;
        loop {
            let (t, data) = self.reply();
            if t == 3 && data[..2] == [0, 0] {
                flags = u16::from_be_bytes([data[10], data[11]]);
            }
            if t == 1 {
                return flags;
            }
            assert_eq!(t, 3, "unexpected reply {t:#x}");
        }
    }
    fn request(&mut self, flags: u16, ty: u16, cookie: u64, off: u64, len: u32, data: &[u8]) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&off.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(data);
        self.0.write_all(&b).unwrap();
    }
    /// A simple reply: (errno, cookie).
    fn simple(&mut self) -> (u32, u64) {
        let h = self.read(16);
        assert_eq!(be32(&h, 0), 0x6744_6698);
        (
            be32(&h, 4),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }
    /// The first chunk of a structured reply: (type, errno if an error chunk).
    fn chunk(&mut self) -> (u16, u32) {
        let h = self.read(20);
        assert_eq!(be32(&h, 0), 0x668e_33ef);
        let ty = u16::from_be_bytes([h[6], h[7]]);
        let p = self.read(be32(&h, 16) as usize);
        (ty, if ty & 0x8000 != 0 { be32(&p, 0) } else { 0 })
    }
    /// True once the server has closed the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn hostile_and_refused_requests() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("h.raw");
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    let sock = dir.path().join("h.sock");
    let srv = NbdServer::start(
        open(&img, "raw", true),
        &Listen::Unix(sock.to_str().unwrap().into()),
        config("ro", true, true),
    )
    .unwrap();

    // Unknown options are answered with ERR_UNSUP; LIST names the export; a wrong name in GO is
    // ERR_UNKNOWN and negotiation goes on.
    let mut c = Raw::connect(&sock);
    c.hello();
    c.option(0x7777, b"junk");
    assert_eq!(c.reply().0, 0x8000_0001);
    c.option(3, &[]);
    let (t, d) = c.reply();
    assert_eq!((t, &d[4..]), (2, &b"ro"[..]));
    assert_eq!(c.reply().0, 1);
    let mut d = 4u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"nope\0\0");
    c.option(7, &d);
    assert_eq!(c.reply().0, 0x8000_0006);
    let flags = c.go("ro");
    assert_ne!(flags & 2, 0, "read-only flag");
    // Errors come as structured ERROR chunks (structured replies were negotiated).
    // Writes to a read-only export: EPERM (the payload is consumed, the connection lives on).
    c.request(0, 1, 1, 0, 4, b"abcd");
    assert_eq!(c.chunk(), (0x8001, 1));
    c.request(0, 6, 2, 0, 4096, &[]);
    assert_eq!(c.chunk(), (0x8001, 1));
    // A read past the end: EINVAL as a structured error chunk.
    c.request(0, 0, 3, 1 << 20, 1, &[]);
    assert_eq!(c.chunk(), (0x8001, 22));
    // A read over 32 MiB: EINVAL, nothing allocated.
    c.request(0, 0, 4, 0, u32::MAX, &[]);
    assert_eq!(c.chunk(), (0x8001, 22));
    // Unknown command and unknown flags: EINVAL.
    c.request(0, 99, 5, 0, 0, &[]);
    assert_eq!(c.chunk(), (0x8001, 22));
    c.request(0x4000, 3, 6, 0, 0, &[]);
    assert_eq!(c.chunk(), (0x8001, 22));
    // A good read still works after all that.
    c.request(0, 0, 7, 4096, 16, &[]);
    let h = c.read(20);
    assert_eq!(u16::from_be_bytes([h[6], h[7]]), 1);
    let p = c.read(be32(&h, 16) as usize);
    assert_eq!(&p[8..], &[0x5a; 16]);
    // A bad request magic ends the connection.
    c.0.write_all(&[0u8; 28]).unwrap();
    assert!(c.closed());

    // An oversized option: refused, and the server hangs up without reading it.
    let mut c = Raw::connect(&sock);
    c.hello();
    let mut b = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    b.extend_from_slice(&7u32.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    c.0.write_all(&b).unwrap();
    assert_eq!(c.reply().0, 0x8000_0009);
    assert!(c.closed());

    // Garbage instead of a greeting reply, and a client that vanishes during negotiation.
    let mut c = Raw::connect(&sock);
    c.hello();
    c.0.write_all(b"not an option header at all").unwrap();
    assert!(c.closed());
    let c = Raw::connect(&sock);
    drop(c);

    // The server still answers a well-behaved client.
    let mut c = Raw::connect(&sock);
    c.hello();
    c.go("ro");
    c.request(0, 3, 9, 0, 0, &[]);
    assert_eq!(c.simple(), (0, 9));
    c.request(0, 2, 10, 0, 0, &[]);
    assert!(c.closed());
    srv.close().unwrap();
}

#[test]
fn writable_errors_and_mid_request_disconnect() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.path().join("m.sock");
    let srv = NbdServer::start(
        open(&img, "raw", false),
        &Listen::Unix(sock.to_str().unwrap().into()),
        config("", false, false),
    )
    .unwrap();
    let mut c = Raw::connect(&sock);
    c.hello();
    let flags = c.go("");
    assert_eq!(flags & 2, 0);
    assert_ne!(flags & (1 << 6), 0, "write zeroes advertised");
    // Past the end: ENOSPC for writes and zeroes, EINVAL for trim.
    c.request(0, 1, 1, (1 << 20) - 2, 4, b"abcd");
    assert_eq!(c.chunk(), (0x8001, 28));
    c.request(0, 6, 2, 1 << 20, 1, &[]);
    assert_eq!(c.chunk(), (0x8001, 28));
    c.request(0, 4, 3, 1 << 20, 1, &[]);
    assert_eq!(c.chunk(), (0x8001, 22));
    // Several requests in flight, answered by cookie.
    for k in 0..8u64 {
        c.request(1, 1, 100 + k, k * 4096, 4096, &[k as u8 + 1; 4096]);
    }
    let mut cookies: Vec<u64> = (0..8)
        .map(|_| c.simple())
        .map(|(e, k)| {
            assert_eq!(e, 0);
            k
        })
        .collect();
    cookies.sort_unstable();
    assert_eq!(cookies, (100..108).collect::<Vec<_>>());
    // A WRITE over 32 MiB cannot be skipped: EINVAL, then the server hangs up.
    c.request(0, 1, 200, 0, 33 << 20, &[]);
    assert_eq!(c.chunk(), (0x8001, 22));
    assert!(c.closed());
    // A client that dies half way through a WRITE's payload.
    let mut c = Raw::connect(&sock);
    c.hello();
    c.go("");
    c.request(0, 1, 1, 65536, 65536, &[0xee; 1000]);
    drop(c);
    // Not persistent: once both clients are gone the server stops and flushes.
    srv.wait().unwrap();
    let f = std::fs::read(&img).unwrap();
    for k in 0..8usize {
        assert!(f[k * 4096..(k + 1) * 4096]
            .iter()
            .all(|&b| b == k as u8 + 1));
    }
    assert!(
        f[65536..65536 + 1000].iter().all(|&b| b == 0),
        "a torn write is not applied"
    );
}

/// A client that connects and stalls in negotiation is dropped after the handshake limit
/// (10 s, as qemu-nbd's), so with `--shared 1` the next client gets its turn.
#[test]
fn stalled_negotiation_is_dropped() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("st.raw");
    std::fs::write(&img, vec![7u8; 65536]).unwrap();
    let sock = dir.path().join("st.sock");
    let mut cfg = config("", true, true);
    cfg.shared = 1;
    let srv = NbdServer::start(
        open(&img, "raw", true),
        &Listen::Unix(sock.to_str().unwrap().into()),
        cfg,
    )
    .unwrap();
    let mut stalled = Raw::connect(&sock);
    stalled.read(18);
    let t0 = Instant::now();
    // Meanwhile a second client waits in the backlog, then is served.
    let st =
        NbdStorage::connect(&Address::Unix(sock.to_str().unwrap().into()), "", true, "t").unwrap();
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(8), "served after {waited:?}");
    assert!(waited < Duration::from_secs(30), "served after {waited:?}");
    let mut b = vec![0u8; 4096];
    st.read_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 7));
    assert!(stalled.closed());
    drop(st);
    srv.close().unwrap();
}

/// Random byte streams — in negotiation, and after a valid negotiation as requests with random
/// fields and random trailing bytes — never panic a server thread, never stop the server, and
/// never change a read-only image; a well-behaved client is still served afterwards.
#[test]
fn random_client_bytes() {
    let _g = serial();
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("f.raw");
    let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&img, &content).unwrap();
    let sock = dir.path().join("f.sock");
    let srv = NbdServer::start(
        open(&img, "raw", true),
        &Listen::Unix(sock.to_str().unwrap().into()),
        config("", true, true),
    )
    .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for case in 0..300 {
        let mut c = Raw::connect(&sock);
        c.0.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut junk = Vec::new();
        let n = (next() % 200) as usize;
        if case % 2 == 0 {
            // Negotiation: greeting read, then option-shaped or random bytes.
            c.read(18);
            junk.extend_from_slice(&((next() % 4) as u32).to_be_bytes());
            for _ in 0..(next() % 4) {
                junk.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
                junk.extend_from_slice(&((next() % 12) as u32).to_be_bytes());
                let len = (next() % 64) as u32;
                junk.extend_from_slice(&len.to_be_bytes());
                junk.extend((0..len).map(|_| next() as u8));
            }
        } else {
            c.hello();
            c.go("");
            for _ in 0..(next() % 6) {
                junk.extend_from_slice(&0x2560_9513u32.to_be_bytes());
                junk.extend_from_slice(&((next() % 0x40) as u16).to_be_bytes());
                junk.extend_from_slice(&((next() % 10) as u16).to_be_bytes());
                junk.extend_from_slice(&next().to_be_bytes());
                let off = if next() % 2 == 0 {
                    next() % (2 << 20)
                } else {
                    next()
                };
                junk.extend_from_slice(&off.to_be_bytes());
                let len = match next() % 3 {
                    0 => (next() % 8192) as u32,
                    1 => next() as u32,
                    _ => 0,
                };
                junk.extend_from_slice(&len.to_be_bytes());
            }
        }
        junk.extend((0..n).map(|_| next() as u8));
        let _ = c.0.write_all(&junk);
        if next() % 2 == 0 {
            // Read whatever comes back until the server stops talking or hangs up.
            c.0.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 65536];
            while matches!(c.0.read(&mut b), Ok(n) if n > 0) {}
        }
        drop(c);
    }
    std::panic::set_hook(prev);
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
    let st =
        NbdStorage::connect(&Address::Unix(sock.to_str().unwrap().into()), "", true, "t").unwrap();
    let mut b = vec![0u8; 1 << 20];
    st.read_at(&mut b, 0).unwrap();
    assert!(b == content);
    drop(st);
    srv.close().unwrap();
    assert_eq!(std::fs::read(&img).unwrap(), content);
}
