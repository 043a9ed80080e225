//! Shared helpers for the NBD client tests: starting real servers (nbdkit, qemu-nbd, nbd-server)
//! as foreground children on private Unix sockets or OS-chosen ports, and making TLS
//! credentials with certtool and psktool (gnutls-bin). Every helper that needs a missing peer
//! prints why the test skips.
#![allow(dead_code)]
use qimg_core::nbd::Address;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True if `cmd` runs; prints a skip reason otherwise.
pub fn have(cmd: &str, pkg: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("SKIP: {cmd} is not installed (apt-get install {pkg}; test/peers/install.sh)");
    }
    ok
}

/// Run a command that must succeed.
pub fn ok(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A server child, killed (by its own pid) when dropped.
pub struct Peer {
    pub child: Child,
    pub addr: Address,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port chosen by the OS.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(addr: &Address, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let up = match addr {
            Address::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            Address::Tcp(h, p) => std::net::TcpStream::connect((h.as_str(), *p)).is_ok(),
        };
        if up {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited early: {st}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True if a TCP socket listens on 127.0.0.1:`port` (from /proc/net/tcp, without connecting:
/// nbd-server in the foreground serves only its first connection).
fn tcp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines().any(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
        })
        .unwrap_or(false)
}

/// Start `cmd args…` on 127.0.0.1:`port` and wait until it listens, without connecting.
pub fn spawn_quiet(cmd: &str, args: &[String], port: u16) -> Peer {
    let mut child = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect(cmd);
    let t0 = Instant::now();
    while !tcp_listening(port) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{cmd} exited early: {st}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{cmd} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Peer {
        child,
        addr: Address::Tcp("127.0.0.1".into(), port),
    }
}

/// Start `cmd args…` listening at `addr` and wait until it accepts connections.
pub fn spawn(cmd: &str, args: &[String], addr: Address) -> Peer {
    let mut child = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect(cmd);
    wait_ready(&addr, &mut child);
    Peer { child, addr }
}

/// nbdkit in the foreground on a Unix socket in `dir`, with `args` (plugin, filters, params).
pub fn nbdkit(dir: &Path, tag: &str, args: &[&str]) -> Peer {
    let sock = dir.join(format!("{tag}.sock")).display().to_string();
    let mut a: Vec<String> = vec!["-f".into(), "-U".into(), sock.clone()];
    a.extend(args.iter().map(|s| s.to_string()));
    spawn("nbdkit", &a, Address::Unix(sock))
}

/// qemu-nbd serving `img` as export `name` on a Unix socket (or TCP when `tcp`).
pub fn qemu_nbd(dir: &Path, img: &str, fmt: &str, name: &str, tcp: bool, extra: &[&str]) -> Peer {
    let mut a: Vec<String> = vec!["--persistent".into(), "--shared=8".into()];
    let addr = if tcp {
        let port = free_port();
        a.extend([
            "-b".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]);
        Address::Tcp("127.0.0.1".into(), port)
    } else {
        let sock = dir.join(format!("{name}.qsock")).display().to_string();
        a.extend(["-k".into(), sock.clone()]);
        Address::Unix(sock)
    };
    a.extend(["-f".into(), fmt.into(), "-x".into(), name.into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(img.into());
    spawn("qemu-nbd", &a, addr)
}

/// A PSK file `dir/keys.psk` with a key for `user`, made by psktool.
pub fn make_psk(dir: &Path, user: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join("keys.psk");
    ok("psktool", &["-u", user, "-p", f.to_str().unwrap()]);
    f
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with
/// certtool, laid out as QEMU's tls-creds-x509 `dir` wants them (server and client files in the
/// same directory).
pub fn make_x509(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let tmpl = |name: &str, body: &str| {
        std::fs::write(dir.join(name), body).unwrap();
        p(name)
    };
    ok(
        "certtool",
        &["--generate-privkey", "--outfile", &p("ca-key.pem")],
    );
    let ca = tmpl(
        "ca.info",
        "cn = qimg test CA\nca\ncert_signing_key\nexpiration_days = 3\n",
    );
    ok(
        "certtool",
        &[
            "--generate-self-signed",
            "--load-privkey",
            &p("ca-key.pem"),
            "--template",
            &ca,
            "--outfile",
            &p("ca-cert.pem"),
        ],
    );
    for (who, body) in [
        (
            "server",
            "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 3\n",
        ),
        (
            "client",
            "cn = qimg client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 3\n",
        ),
    ] {
        let key = p(&format!("{who}-key.pem"));
        ok("certtool", &["--generate-privkey", "--outfile", &key]);
        let t = tmpl(&format!("{who}.info"), body);
        ok(
            "certtool",
            &[
                "--generate-certificate",
                "--load-privkey",
                &key,
                "--load-ca-certificate",
                &p("ca-cert.pem"),
                "--load-ca-privkey",
                &p("ca-key.pem"),
                "--template",
                &t,
                "--outfile",
                &p(&format!("{who}-cert.pem")),
            ],
        );
    }
    // nbdkit's --tls-certificates directory names the CA and server files the same way.
}
