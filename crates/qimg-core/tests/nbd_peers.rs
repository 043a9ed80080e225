//! The NBD client against real servers other than plain qemu-nbd: nbdkit (memory with TLS-PSK
//! and x509, `--no-sr` simple replies, the `error` filter's injected EIO, the `exportname`
//! filter with `NBD_OPT_LIST`, the `delay` filter for concurrency and timeouts), nbd-server
//! (simple replies only, size from GO), and qemu-nbd over TCP and TLS. Each test skips with a
//! printed reason when its peer is missing.
mod common_nbd;
use common_nbd::*;
use qimg_core::nbd::{list_exports, Address, ConnectOptions, NbdStorage, TlsConfig, TlsCreds};
use qimg_core::{ErrorCode, Storage};
use std::time::{Duration, Instant};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn roundtrip(s: &NbdStorage) {
    let d = pattern(3 << 20, 7);
    s.write_at(&d, 1 << 20).unwrap();
    s.flush().unwrap();
    let mut b = vec![0u8; d.len()];
    s.read_at(&mut b, 1 << 20).unwrap();
    assert!(b == d, "read back differs");
}

fn psk(dir: &std::path::Path, user: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        tls: Some(TlsConfig {
            creds: TlsCreds::psk_from_dir(dir, user, true).unwrap(),
            hostname: None,
        }),
        ..Default::default()
    }
}

#[test]
fn nbdkit_tls_psk_required_and_refused_without() {
    if !have("nbdkit", "nbdkit") || !have("psktool", "gnutls-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("psk");
    let f = make_psk(&keys, "qemu");
    let f = f.to_str().unwrap();
    let srv = nbdkit(
        dir.path(),
        "psk",
        &["--tls=require", &format!("--tls-psk={f}"), "memory", "16M"],
    );
    let s = NbdStorage::connect_with(&srv.addr, "", "tls", &psk(&keys, None)).unwrap();
    assert_eq!(s.export().size, 16 << 20);
    // nbdkit's memory plugin allows multi-conn: every connection negotiates TLS.
    s.wait_for_connections(Duration::from_secs(10));
    assert_eq!(s.requests_per_connection().len(), 4);
    roundtrip(&s);
    // Several threads sharing the TLS connection.
    std::thread::scope(|sc| {
        for t in 0..6u8 {
            let s = &s;
            sc.spawn(move || {
                let d = pattern(256 << 10, t);
                let at = (8 << 20) + t as u64 * (256 << 10);
                s.write_at(&d, at).unwrap();
                let mut b = vec![0u8; d.len()];
                s.read_at(&mut b, at).unwrap();
                assert!(b == d);
            });
        }
    });
    drop(s);

    // No credentials: a clear error naming TLS, never plaintext.
    let e = NbdStorage::connect(&srv.addr, "", true, "x").unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert!(e.message.contains("requires TLS"), "{e}");

    // Wrong key: the TLS handshake fails.
    let other = dir.path().join("other");
    make_psk(&other, "qemu");
    let e = NbdStorage::connect_with(&srv.addr, "", "x", &psk(&other, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io, "{e}");
    assert!(e.message.contains("TLS"), "{e}");
    // A username the file does not have.
    let e = TlsCreds::psk_from_dir(&keys, Some("nobody"), true).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

#[test]
fn tls_required_by_the_client_never_falls_back_to_plaintext() {
    if !have("nbdkit", "nbdkit") || !have("psktool", "gnutls-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("psk");
    make_psk(&keys, "qemu");
    let srv = nbdkit(dir.path(), "plain", &["--tls=off", "memory", "1M"]);
    let e = NbdStorage::connect_with(&srv.addr, "", "x", &psk(&keys, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert!(e.message.contains("does not support TLS"), "{e}");
}

#[test]
fn nbdkit_tls_x509_with_client_certificate() {
    if !have("nbdkit", "nbdkit") || !have("certtool", "gnutls-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("x509");
    make_x509(&certs);
    let port = free_port();
    let args: Vec<String> = [
        "-f",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--tls=require",
        &format!("--tls-certificates={}", certs.display()),
        "--tls-verify-peer",
        "memory",
        "8M",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let srv = spawn("nbdkit", &args, Address::Tcp("127.0.0.1".into(), port));
    let x509 = |hostname: Option<&str>| ConnectOptions {
        tls: Some(TlsConfig {
            creds: TlsCreds::x509_from_dir(&certs, true).unwrap(),
            hostname: hostname.map(str::to_string),
        }),
        ..Default::default()
    };
    let s = NbdStorage::connect_with(&srv.addr, "", "x509", &x509(None)).unwrap();
    roundtrip(&s);
    drop(s);
    let s = NbdStorage::connect_with(&srv.addr, "", "x509", &x509(Some("localhost"))).unwrap();
    drop(s);
    // A name the certificate does not carry.
    let e =
        NbdStorage::connect_with(&srv.addr, "", "x", &x509(Some("elsewhere.example"))).unwrap_err();
    assert!(e.message.contains("certificate"), "{e}");
    // Another CA: verification fails.
    let other = dir.path().join("other");
    make_x509(&other);
    let o = ConnectOptions {
        tls: Some(TlsConfig {
            creds: TlsCreds::x509_from_dir(&other, true).unwrap(),
            hostname: None,
        }),
        ..Default::default()
    };
    let e = NbdStorage::connect_with(&srv.addr, "", "x", &o).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io, "{e}");
}

#[test]
fn nbdkit_simple_replies_only() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = nbdkit(dir.path(), "nosr", &["--no-sr", "memory", "8M"]);
    let s = NbdStorage::connect(&srv.addr, "", false, "nosr").unwrap();
    assert!(!s.export().structured);
    assert_eq!(s.export().base_allocation, None);
    roundtrip(&s);
    // Without block status everything counts as data.
    assert!(s.data_run(0, 4096).unwrap().data);
    s.write_zeroes(1 << 20, 1 << 20, false).unwrap();
    let mut b = vec![1u8; 1 << 20];
    s.read_at(&mut b, 1 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0));
}

#[test]
fn nbdkit_injected_eio_is_an_error_never_zeros() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (tag, extra) in [("sr", None), ("nosr", Some("--no-sr"))] {
        let mut args = vec![];
        args.extend(extra);
        args.extend([
            "--filter=error",
            "memory",
            "8M",
            "error-pread=EIO",
            "error-pread-rate=100%",
            "error-pwrite=ENOSPC",
            "error-pwrite-rate=100%",
        ]);
        let srv = nbdkit(dir.path(), tag, &args);
        let s = NbdStorage::connect(&srv.addr, "", false, "eio").unwrap();
        let mut b = vec![0u8; 65536];
        let e = s.read_at(&mut b, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::Io, "{tag}: {e}");
        assert_eq!(e.errno, Some(5), "{tag}: {e}");
        let e = s.write_at(&b, 0).unwrap_err();
        assert_eq!(e.errno, Some(28), "{tag}: {e}");
        // The connection stays usable after a failed request.
        assert_eq!(s.read_at(&mut b, 4096).unwrap_err().errno, Some(5));
    }
}

#[test]
fn export_names_listing_and_a_missing_export() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = nbdkit(
        dir.path(),
        "names",
        &[
            "--filter=exportname",
            "memory",
            "1M",
            "exportname=alpha",
            "exportname=beta",
            "exportname-list=explicit",
            "exportname-strict=true",
        ],
    );
    let list = list_exports(&srv.addr, None, Duration::from_secs(10)).unwrap();
    let names: Vec<_> = list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let s = NbdStorage::connect(&srv.addr, "beta", true, "beta").unwrap();
    assert_eq!(s.export().size, 1 << 20);
    let e = NbdStorage::connect(&srv.addr, "gamma", true, "gamma").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    assert!(e.message.contains("gamma"), "{e}");
}

#[test]
fn requests_are_in_flight_together_and_a_silent_server_times_out() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Every read takes 300 ms on the server (nbdkit runs requests of one connection in
    // parallel): 8 concurrent reads on one connection finish in far less than 8 × 300 ms only
    // if they are on the wire together.
    let srv = nbdkit(
        dir.path(),
        "delay",
        &["--filter=delay", "memory", "8M", "rdelay=300ms"],
    );
    let s = NbdStorage::connect(&srv.addr, "", true, "delay").unwrap();
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for i in 0..8u64 {
            let s = &s;
            sc.spawn(move || {
                let mut b = vec![0u8; 4096];
                s.read_at(&mut b, i * 65536).unwrap();
            });
        }
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // A 5 s delay against a 1 s timeout: a clean timeout error, and the connection is dead.
    let slow = nbdkit(
        dir.path(),
        "slow",
        &["--filter=delay", "memory", "8M", "rdelay=5"],
    );
    let o = ConnectOptions {
        read_only: true,
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let s = NbdStorage::connect_with(&slow.addr, "", "slow", &o).unwrap();
    let t0 = Instant::now();
    let mut b = vec![0u8; 4096];
    let e = s.read_at(&mut b, 0).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(e.code, ErrorCode::Io);
    assert!(e.message.contains("did not answer"), "{e}");
    assert!(s.read_at(&mut b, 0).is_err());
}

#[test]
fn nbd_server_simple_replies_and_size_from_go() {
    if !have("nbd-server", "nbd-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(5 << 20).unwrap();
    drop(f);
    let port = free_port();
    let conf = dir.path().join("nbd.conf");
    std::fs::write(
        &conf,
        format!(
            "[generic]\nport = {port}\nlistenaddr = 127.0.0.1\nallowlist = true\n\
             [disk]\nexportname = {}\n",
            img.display()
        ),
    )
    .unwrap();
    let args: Vec<String> = ["-d", "-C", conf.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // In the foreground (-d) nbd-server serves one connection and then exits: one server per
    // connection.
    let srv = spawn_quiet("nbd-server", &args, port);
    let s = NbdStorage::connect(&srv.addr, "disk", false, "nbd-server").unwrap();
    assert_eq!(s.export().size, 5 << 20);
    assert!(!s.export().structured);
    let d = pattern(1 << 20, 3);
    s.write_at(&d, 2 << 20).unwrap();
    s.flush().unwrap();
    let mut b = vec![0u8; d.len()];
    s.read_at(&mut b, 2 << 20).unwrap();
    assert!(b == d);
    drop(s);
    drop(srv);
    let on_disk = std::fs::read(&img).unwrap();
    assert!(on_disk[2 << 20..3 << 20] == d[..]);
    let srv = spawn_quiet("nbd-server", &args, port);
    let list = list_exports(&srv.addr, None, Duration::from_secs(10)).unwrap();
    assert!(list.iter().any(|e| e.name == "disk"), "{list:?}");
    drop(srv);
    // Without `allowlist`, nbd-server refuses NBD_OPT_LIST: a refused option is a clear error.
    std::fs::write(
        &conf,
        format!(
            "[generic]\nport = {port}\nlistenaddr = 127.0.0.1\n[disk]\nexportname = {}\n",
            img.display()
        ),
    )
    .unwrap();
    let srv = spawn_quiet("nbd-server", &args, port);
    let e = list_exports(&srv.addr, None, Duration::from_secs(10)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert!(e.message.contains("refused to list"), "{e}");
}

/// The server side of the TLS layer (for an NBD server): its acceptor completes a handshake with
/// gnutls-cli, an independent TLS client, for PSK and for x509 with a client certificate.
#[test]
fn tls_acceptor_against_gnutls_cli() {
    if !have("gnutls-cli", "gnutls-bin") || !have("psktool", "gnutls-bin") {
        return;
    }
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("psk");
    let f = make_psk(&keys, "qemu");
    let hex = std::fs::read_to_string(&f).unwrap();
    let hex = hex.trim().split(':').nth(1).unwrap().to_string();
    let certs = dir.path().join("x509");
    make_x509(&certs);
    let cases: Vec<(TlsCreds, Vec<String>)> = vec![
        (
            TlsCreds::psk_from_dir(&keys, None, false).unwrap(),
            vec![
                "--pskusername=qemu".into(),
                format!("--pskkey={hex}"),
                "--priority=NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK".into(),
            ],
        ),
        (
            TlsCreds::x509_from_dir(&certs, true).unwrap(),
            vec![
                format!("--x509cafile={}", certs.join("ca-cert.pem").display()),
                format!("--x509certfile={}", certs.join("client-cert.pem").display()),
                format!("--x509keyfile={}", certs.join("client-key.pem").display()),
            ],
        ),
    ];
    for (creds, args) in cases {
        let acceptor = creds.acceptor().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).ok();
            let mut s = acceptor.accept(c).map_err(|e| e.to_string())?;
            let mut b = [0u8; 5];
            s.read_exact(&mut b).map_err(|e| e.to_string())?;
            s.write_all(b"pong\n").map_err(|e| e.to_string())?;
            let _ = s.shutdown();
            Ok::<_, String>(b)
        });
        let mut cli = std::process::Command::new("gnutls-cli")
            .args(&args)
            .args(["--logfile=/dev/null", "-p", &port.to_string(), "localhost"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        cli.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
        let got = server.join().unwrap();
        let out = cli.wait_with_output().unwrap();
        assert_eq!(
            got.as_ref().map(|b| &b[..]),
            Ok(&b"ping\n"[..]),
            "{creds:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("pong"),
            "{creds:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A server that enforces a 4 KiB minimum block size (nbdkit's `blocksize-policy` filter with
/// the error policy: misaligned requests fail with EINVAL): unaligned reads, writes and write
/// zeroes still land exactly, checked against a model of the export.
#[test]
fn minimum_block_size_is_honoured() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = nbdkit(
        dir.path(),
        "bs",
        &[
            "--filter=blocksize-policy",
            "memory",
            "1M",
            "blocksize-minimum=4096",
            "blocksize-preferred=4096",
            "blocksize-maximum=65536",
            "blocksize-error-policy=error",
        ],
    );
    let s = NbdStorage::connect(&srv.addr, "", false, "bs").unwrap();
    assert_eq!(s.export().min_block, 4096);
    let mut model = vec![0u8; 1 << 20];
    let mut rng = 12345u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for i in 0..200 {
        let off = next(1 << 20);
        let len = (next(200_000) + 1).min((1 << 20) - off);
        match i % 3 {
            0 => {
                let d = pattern(len as usize, i as u8);
                s.write_at(&d, off).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&d);
            }
            1 => {
                s.write_zeroes(off, len, i % 2 == 0).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            _ => {
                let mut b = vec![0u8; len as usize];
                s.read_at(&mut b, off).unwrap();
                assert!(
                    b[..] == model[off as usize..(off + len) as usize],
                    "read {off}+{len}"
                );
            }
        }
    }
    let mut all = vec![0u8; 1 << 20];
    s.read_at(&mut all, 0).unwrap();
    assert!(all == model);
    assert!(s.data_run(4097, 10_000).unwrap().length >= 1);
}
