//! The NBD client against qemu-nbd beyond the basics of nbd_client.rs: TCP with a named
//! export, TLS-PSK and TLS-x509 (`--object tls-creds-*`, credentials made with psktool and
//! certtool), `qemu:allocation-depth` (`-A`) over a backing chain, trim and FUA writes, and
//! several threads sharing one connection. Skips with a printed reason when a peer is missing.
mod common_nbd;
use common_nbd::*;
use qimg_core::nbd::{ConnectOptions, NbdStorage, TlsConfig, TlsCreds};
use qimg_core::{ErrorCode, Storage};

fn peers() -> bool {
    have("qemu-nbd", "qemu-utils") && have("qemu-img", "qemu-utils")
}

fn image(dir: &std::path::Path, name: &str) -> String {
    let i = dir.join(name).display().to_string();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", &i, "16M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 0x33 1M 2M", &i]);
    i
}

#[test]
fn tcp_named_export_with_parallel_callers() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "t.qcow2");
    let srv = qemu_nbd(dir.path(), &img, "qcow2", "named", true, &[]);
    let s = NbdStorage::connect(&srv.addr, "named", false, "nbd://127.0.0.1/named").unwrap();
    assert_eq!(s.export().size, 16 << 20);
    // 8 threads, each writing and reading back its own 1 MiB through the one connection.
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let s = &s;
            sc.spawn(move || {
                let d: Vec<u8> = (0..1 << 20).map(|i: u64| (i * 7 + t) as u8).collect();
                let at = (4 + t) << 20;
                s.write_at(&d, at).unwrap();
                let mut b = vec![0u8; d.len()];
                s.read_at(&mut b, at).unwrap();
                assert!(b == d, "thread {t}");
            });
        }
    });
    // Read buffers are recycled: a hole read right after a data read of the same size is zeros.
    let mut b = vec![0u8; 1 << 20];
    for _ in 0..3 {
        s.read_at(&mut b, 5 << 20).unwrap();
        assert!(b.iter().any(|&x| x != 0));
        s.read_at(&mut b, 14 << 20).unwrap();
        assert!(b.iter().all(|&x| x == 0), "hole read returned stale bytes");
    }
    // FUA write, then trim (a hint) and write-zeroes with fast-zero.
    s.write_fua(&[9u8; 65536], 0, true).unwrap();
    s.trim(12 << 20, 1 << 20).unwrap();
    let fast = s.write_zeroes_fast(4 << 20, 1 << 20, true).unwrap();
    let mut b = vec![1u8; 1 << 20];
    s.read_at(&mut b, 4 << 20).unwrap();
    assert_eq!(fast, b.iter().all(|&x| x == 0), "fast zero said {fast}");
    s.flush().unwrap();
    drop(s);
    drop(srv);
    // What qemu-io sees in the image after the server is gone.
    ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "read -P 9 0 64k",
            "-c",
            "read -P 0x33 1M 2M",
            &img,
        ],
    );
    let e = NbdStorage::connect(
        &qimg_core::nbd::Address::Tcp("127.0.0.1".into(), free_port()),
        "x",
        true,
        "x",
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Io, "{e}");
}

#[test]
fn qemu_nbd_tls_psk_and_x509() {
    if !peers() || !have("psktool", "gnutls-bin") || !have("certtool", "gnutls-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "tls.qcow2");
    let psk = dir.path().join("psk");
    make_psk(&psk, "qemu");
    let obj = format!(
        "tls-creds-psk,id=tls0,dir={},endpoint=server",
        psk.display()
    );
    let srv = qemu_nbd(
        dir.path(),
        &img,
        "qcow2",
        "p",
        false,
        &["--object", &obj, "--tls-creds", "tls0"],
    );
    let o = ConnectOptions {
        tls: Some(TlsConfig {
            creds: TlsCreds::psk_from_dir(&psk, None, true).unwrap(),
            hostname: None,
        }),
        ..Default::default()
    };
    let s = NbdStorage::connect_with(&srv.addr, "p", "psk", &o).unwrap();
    let mut b = vec![0u8; 2 << 20];
    s.read_at(&mut b, 1 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0x33));
    s.write_at(&[0x44; 4096], 8 << 20).unwrap();
    // The server is killed below: make the write durable first.
    s.flush().unwrap();
    drop(s);
    let e = NbdStorage::connect(&srv.addr, "p", true, "x").unwrap_err();
    assert!(e.message.contains("requires TLS"), "{e}");
    drop(srv);

    let certs = dir.path().join("x509");
    make_x509(&certs);
    let obj = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=on",
        certs.display()
    );
    let srv = qemu_nbd(
        dir.path(),
        &img,
        "qcow2",
        "x",
        true,
        &["--object", &obj, "--tls-creds", "tls0"],
    );
    let o = ConnectOptions {
        tls: Some(TlsConfig {
            creds: TlsCreds::x509_from_dir(&certs, true).unwrap(),
            hostname: None,
        }),
        ..Default::default()
    };
    let s = NbdStorage::connect_with(&srv.addr, "x", "x509", &o).unwrap();
    let mut b = vec![0u8; 4096];
    s.read_at(&mut b, 8 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0x44));
    drop(s);
    // Without the client certificate qemu-nbd (verify-peer=on) refuses the session.
    let nocert = dir.path().join("nocert");
    std::fs::create_dir(&nocert).unwrap();
    std::fs::copy(certs.join("ca-cert.pem"), nocert.join("ca-cert.pem")).unwrap();
    let o = ConnectOptions {
        tls: Some(TlsConfig {
            creds: TlsCreds::x509_from_dir(&nocert, true).unwrap(),
            hostname: None,
        }),
        ..Default::default()
    };
    let e = NbdStorage::connect_with(&srv.addr, "x", "x", &o).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io, "{e}");
}

#[test]
fn allocation_depth_over_a_backing_chain() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2").display().to_string();
    let top = dir.path().join("top.qcow2").display().to_string();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", &base, "8M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 1 0 1M", &base]);
    ok(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &top,
        ],
    );
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 2 2M 1M", &top]);
    let srv = qemu_nbd(dir.path(), &top, "qcow2", "d", false, &["-A", "-r"]);
    let s = NbdStorage::connect(&srv.addr, "d", true, "d").unwrap();
    assert!(s.export().allocation_depth.is_some());
    assert_eq!(s.allocation_depth(0, 8 << 20).unwrap(), Some((1 << 20, 2)));
    assert_eq!(
        s.allocation_depth(1 << 20, 7 << 20).unwrap(),
        Some((1 << 20, 0))
    );
    assert_eq!(
        s.allocation_depth(2 << 20, 6 << 20).unwrap(),
        Some((1 << 20, 1))
    );
    // Without -A the context is absent.
    let srv2 = qemu_nbd(dir.path(), &top, "qcow2", "e", false, &["-r"]);
    let s2 = NbdStorage::connect(&srv2.addr, "e", true, "e").unwrap();
    assert_eq!(s2.allocation_depth(0, 1 << 20).unwrap(), None);
}
