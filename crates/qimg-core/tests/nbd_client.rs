//! The NBD client against a real qemu-nbd (skips with a printed reason when it is missing):
//! reads equal qemu-img's decode, block status agrees with the image's allocation, writes,
//! zeroes and discards land (checked with qemu-img compare after the server exits), requests
//! larger than the server's maximum are split, and a missing export or a read-only export give
//! typed errors. Disconnects during negotiation use a hand-written listener (no real server can
//! be made to hang up at a chosen byte), and end in a clean error.
use qimg_core::nbd::{Address, NbdStorage};
use qimg_core::{ErrorCode, Storage};
use std::io::Write;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn have(cmd: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {cmd} is not installed (apt-get install qemu-utils)");
    }
    ok
}

fn ok(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// qemu-nbd serving `img` (format `fmt`) as export `name` on a Unix socket.
struct Server {
    child: Child,
    sock: String,
}

impl Server {
    fn start(dir: &std::path::Path, img: &str, fmt: &str, name: &str, extra: &[&str]) -> Server {
        let sock = dir
            .join(format!("{name}.sock"))
            .to_str()
            .unwrap()
            .to_string();
        let child = Command::new("qemu-nbd")
            .args([
                "--persistent",
                "--shared=8",
                "-k",
                &sock,
                "-f",
                fmt,
                "-x",
                name,
            ])
            .args(extra)
            .arg(img)
            .spawn()
            .expect("qemu-nbd");
        let t0 = Instant::now();
        while !std::path::Path::new(&sock).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "qemu-nbd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, sock }
    }

    fn addr(&self) -> Address {
        Address::Unix(self.sock.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reads_writes_and_block_status_against_qemu_nbd() {
    if !have("qemu-nbd") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    let i = img.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", i, "48M"]);
    ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 1M",
            "-c",
            "write -P 0x22 5M 40M",
            "-c",
            "write -z 20M 1M",
            i,
        ],
    );
    let raw = dir.path().join("d.raw");
    ok(
        "qemu-img",
        &["convert", "-O", "raw", i, raw.to_str().unwrap()],
    );
    let mut model = std::fs::read(&raw).unwrap();
    {
        let srv = Server::start(dir.path(), i, "qcow2", "disk", &[]);
        let s = NbdStorage::connect(&srv.addr(), "disk", false, "nbd+unix:///disk").unwrap();
        assert_eq!(s.size().unwrap(), 48 << 20);
        let e = s.export();
        assert!(e.structured && e.base_allocation.is_some(), "{e:?}");
        // One read larger than qemu-nbd's 32 MiB maximum request.
        let mut all = vec![0u8; 48 << 20];
        s.read_at(&mut all, 0).unwrap();
        assert!(all == model, "export contents equal qemu-img's decode");
        // Reads past the end are zeros.
        let mut tail = vec![1u8; 4096];
        s.read_at(&mut tail, (48 << 20) - 1024).unwrap();
        assert!(tail[1024..].iter().all(|&b| b == 0));
        // Block status: data where written, holes elsewhere.
        assert!(s.data_run(0, 1 << 20).unwrap().data);
        let hole = s.data_run(2 << 20, 1 << 20).unwrap();
        assert!(!hole.data, "{hole:?}");
        // Writes, zeroes, discards.
        s.write_at(&vec![0x33u8; 300_000], 3_000_000).unwrap();
        model[3_000_000..3_300_000].fill(0x33);
        s.write_zeroes(6 << 20, 1 << 20, false).unwrap();
        model[6 << 20..7 << 20].fill(0);
        s.discard(8 << 20, 2 << 20).unwrap();
        model[8 << 20..10 << 20].fill(0);
        s.flush().unwrap();
        let mut back = vec![0u8; 300_000];
        s.read_at(&mut back, 3_000_000).unwrap();
        assert!(back.iter().all(|&b| b == 0x33));
        // Errors: a missing export; a writable open of a read-only export.
        let missing = NbdStorage::connect(&srv.addr(), "nope", true, "x").unwrap_err();
        assert_eq!(missing.code, ErrorCode::NotFound, "{missing}");
        drop(s);
    }
    std::fs::write(&raw, &model).unwrap();
    ok("qemu-img", &["check", i]);
    ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            i,
            raw.to_str().unwrap(),
        ],
    );

    let srv = Server::start(dir.path(), i, "qcow2", "ro", &["-r"]);
    let err = NbdStorage::connect(&srv.addr(), "ro", false, "x").unwrap_err();
    assert_eq!(err.code, ErrorCode::ReadOnly, "{err}");
    let r = NbdStorage::connect(&srv.addr(), "ro", true, "x").unwrap();
    let e = r.write_at(&[1], 0).unwrap_err();
    assert_eq!(e.code, ErrorCode::ReadOnly, "{e}");
}

#[test]
fn a_server_hanging_up_during_negotiation_is_a_clean_error() {
    // Hand-written listener: each case writes a prefix of a valid negotiation, then closes.
    let greeting = {
        let mut g = Vec::new();
        g.extend_from_slice(&0x4e42_444d_4147_4943u64.to_be_bytes());
        g.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
        g.extend_from_slice(&3u16.to_be_bytes());
        g
    };
    for cut in [0, 5, 8, 16, greeting.len()] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let g = greeting.clone();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(&g[..cut]).unwrap();
            // Closing the socket: the client must see EOF, not wait.
        });
        let t0 = Instant::now();
        let err = NbdStorage::connect(&Address::Tcp("127.0.0.1".into(), port), "", true, "x")
            .unwrap_err();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "cut {cut}: took too long"
        );
        assert!(
            matches!(err.code, ErrorCode::Io | ErrorCode::WrongFormat),
            "cut {cut}: {err}"
        );
        t.join().unwrap();
    }
    // Not an NBD server at all.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    });
    let err =
        NbdStorage::connect(&Address::Tcp("127.0.0.1".into(), port), "", true, "x").unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongFormat, "{err}");
    t.join().unwrap();
}
