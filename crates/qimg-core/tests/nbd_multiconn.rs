//! Multi-conn against real servers: with `NBD_FLAG_CAN_MULTI_CONN` (qemu-nbd `--shared=8`,
//! nbdkit memory) the client opens several connections and spreads requests over them (counted
//! by the client and, for nbdkit, on the wire by its `log` filter, which also shows a flush on
//! every connection); data read equals qemu-img's decode and data written compares equal under
//! `qemu-img compare`. Without the flag (qemu-nbd without `--shared`, nbdkit's `multi-conn`
//! filter in `disable` mode) or with `connections: 1` there is exactly one connection. An EIO
//! injected (nbdkit `eval`) for one range, so on one of the connections, fails the read.
//! Read-only opens ask block status for a window ahead and answer later queries from it (one
//! request on the wire for many queries). Each test skips with a printed reason when its peer
//! is missing.
mod common_nbd;
use common_nbd::*;
use qimg_core::nbd::{Address, ConnectOptions, NbdStorage};
use qimg_core::{ErrorCode, Storage};
use std::collections::{BTreeMap, BTreeSet};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

fn opts(read_only: bool, connections: usize) -> ConnectOptions {
    ConnectOptions {
        read_only,
        connections,
        ..Default::default()
    }
}

/// Requests per nbdkit connection id in a `log` filter file: op name → count.
fn logged(log: &std::path::Path) -> BTreeMap<u32, BTreeMap<String, usize>> {
    let mut out: BTreeMap<u32, BTreeMap<String, usize>> = BTreeMap::new();
    for l in std::fs::read_to_string(log).unwrap().lines() {
        let Some(rest) = l.split("connection=").nth(1) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(id), Some(op)) = (it.next(), it.next()) else {
            continue;
        };
        // Requests only (their replies start with "...").
        if !l.ends_with("...") || op.starts_with("...") {
            continue;
        }
        *out.entry(id.parse().unwrap())
            .or_default()
            .entry(op.to_string())
            .or_default() += 1;
    }
    out
}

#[test]
fn qemu_nbd_shared_reads_and_writes_over_several_connections() {
    if !have("qemu-nbd", "qemu-utils") || !have("qemu-img", "qemu-utils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.qcow2");
    let raw = dir.path().join("a.raw");
    let model = pattern(24 << 20, 3);
    std::fs::write(&raw, &model).unwrap();
    let (i, r) = (img.to_str().unwrap(), raw.to_str().unwrap());
    ok("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", r, i]);
    let mut model = model;
    {
        let srv = qemu_nbd(dir.path(), i, "qcow2", "mc", false, &[]);
        // Read-only: four connections, every one used by one large read.
        let s = NbdStorage::connect_with(&srv.addr, "mc", "ro", &opts(true, 4)).unwrap();
        assert_eq!(s.requests_per_connection().len(), 4, "four connections");
        let mut all = vec![0u8; model.len()];
        s.read_at(&mut all, 0).unwrap();
        assert!(all == model, "reads equal qemu-img's decode");
        let per = s.requests_per_connection();
        assert!(per.iter().all(|&n| n > 0), "every connection used: {per:?}");
        drop(s);
        // Writable: writes spread over the connections, flushed, then compared by qemu-img.
        let s = NbdStorage::connect_with(&srv.addr, "mc", "rw", &opts(false, 3)).unwrap();
        assert_eq!(s.requests_per_connection().len(), 3);
        let d = pattern(6 << 20, 77);
        s.write_at(&d, 5_000_000).unwrap();
        model[5_000_000..5_000_000 + d.len()].copy_from_slice(&d);
        s.write_zeroes(16 << 20, 2 << 20, false).unwrap();
        model[16 << 20..18 << 20].fill(0);
        s.flush().unwrap();
        let per = s.requests_per_connection();
        assert!(per.iter().filter(|&&n| n > 1).count() >= 2, "{per:?}");
        let mut back = vec![0u8; d.len()];
        s.read_at(&mut back, 5_000_000).unwrap();
        assert!(back == d);
        drop(s);
    }
    std::fs::write(&raw, &model).unwrap();
    ok("qemu-img", &["check", i]);
    ok("qemu-img", &["compare", "-f", "qcow2", "-F", "raw", i, r]);
}

#[test]
fn one_connection_without_the_flag_or_when_asked() {
    if !have("qemu-nbd", "qemu-utils") || !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("b.raw");
    std::fs::write(&img, pattern(4 << 20, 9)).unwrap();
    // qemu-nbd without --shared: writable exports do not advertise multi-conn (and a second
    // connection would wait for the first to go).
    let sock = dir.path().join("single.sock").display().to_string();
    let srv = spawn(
        "qemu-nbd",
        &[
            "-k".into(),
            sock.clone(),
            "-f".into(),
            "raw".into(),
            img.display().to_string(),
        ],
        Address::Unix(sock),
    );
    let t0 = std::time::Instant::now();
    let s = NbdStorage::connect_with(&srv.addr, "", "single", &opts(false, 4)).unwrap();
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(s.requests_per_connection().len(), 1);
    let mut b = vec![0u8; 4 << 20];
    s.read_at(&mut b, 0).unwrap();
    assert!(b == pattern(4 << 20, 9));
    drop(s);
    drop(srv);
    // nbdkit with the multi-conn filter clearing the flag.
    let srv = nbdkit(
        dir.path(),
        "nomc",
        &[
            "--filter=multi-conn",
            "memory",
            "8M",
            "multi-conn-mode=disable",
        ],
    );
    let s = NbdStorage::connect_with(&srv.addr, "", "nomc", &opts(false, 4)).unwrap();
    assert_eq!(s.requests_per_connection().len(), 1);
    drop(s);
    // The flag is there, but one connection is asked for.
    let srv = nbdkit(dir.path(), "mc1", &["memory", "8M"]);
    let s = NbdStorage::connect_with(&srv.addr, "", "mc1", &opts(false, 1)).unwrap();
    assert_eq!(s.requests_per_connection().len(), 1);
    let s4 = NbdStorage::connect_with(&srv.addr, "", "mc4", &opts(false, 4)).unwrap();
    assert_eq!(s4.requests_per_connection().len(), 4);
}

#[test]
fn nbdkit_log_shows_requests_on_several_connections_and_a_flush_on_each() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mc.log");
    let srv = nbdkit(
        dir.path(),
        "mclog",
        &[
            "--filter=log",
            "memory",
            "32M",
            &format!("logfile={}", log.display()),
        ],
    );
    let s = NbdStorage::connect_with(&srv.addr, "", "mclog", &opts(false, 4)).unwrap();
    let d = pattern(8 << 20, 5);
    s.write_at(&d, 1 << 20).unwrap();
    s.flush().unwrap();
    let mut b = vec![0u8; d.len()];
    s.read_at(&mut b, 1 << 20).unwrap();
    assert!(b == d, "read back differs");
    s.close();
    drop(s);
    drop(srv);
    let per = logged(&log);
    let writers: BTreeSet<_> = per
        .iter()
        .filter(|(_, ops)| ops.get("Write").copied().unwrap_or(0) > 0)
        .map(|(c, _)| *c)
        .collect();
    let readers: BTreeSet<_> = per
        .iter()
        .filter(|(_, ops)| ops.get("Read").copied().unwrap_or(0) > 0)
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(per.len(), 4, "four connections on the wire: {per:?}");
    assert!(writers.len() >= 2, "writes on several connections: {per:?}");
    assert!(readers.len() >= 2, "reads on several connections: {per:?}");
    for (c, ops) in &per {
        assert_eq!(ops.get("Flush"), Some(&1), "connection {c}: {ops:?}");
    }
}

#[test]
fn eio_on_one_of_several_connections_fails_the_read() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("eio.log");
    // Zeros everywhere but an EIO for reads touching [2 MiB, 3 MiB).
    let srv = nbdkit(
        dir.path(),
        "eio",
        &[
            "--filter=log",
            "eval",
            "get_size=echo 8M",
            "can_multi_conn=exit 0",
            "pread=if [ $4 -lt 3145728 ] && [ $(($4 + $3)) -gt 2097152 ]; then echo 'EIO injected' >&2; exit 1; fi; dd if=/dev/zero count=$3 iflag=count_bytes status=none",
            &format!("logfile={}", log.display()),
        ],
    );
    let s = NbdStorage::connect_with(&srv.addr, "", "eio", &opts(true, 4)).unwrap();
    // eval runs a shell per callback: negotiation is slow.
    s.wait_for_connections(std::time::Duration::from_secs(20));
    assert_eq!(s.requests_per_connection().len(), 4);
    let mut b = vec![1u8; 4 << 20];
    let e = s.read_at(&mut b, 0).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io, "{e}");
    assert_eq!(e.errno, Some(5), "{e}");
    // The other ranges still read (as zeros), on their connections.
    let mut ok_part = vec![1u8; 1 << 20];
    s.read_at(&mut ok_part, 4 << 20).unwrap();
    assert!(ok_part.iter().all(|&x| x == 0));
    drop(s);
    drop(srv);
    let per = logged(&log);
    let readers = per
        .values()
        .filter(|ops| ops.get("Read").copied().unwrap_or(0) > 0)
        .count();
    assert!(readers >= 2, "reads on several connections: {per:?}");
}

#[test]
fn read_only_block_status_is_asked_once_per_window() {
    if !have("nbdkit", "nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bs.log");
    // 1 MiB of data every 4 MiB, holes between.
    let srv = nbdkit(
        dir.path(),
        "bs",
        &[
            "--filter=log",
            "data",
            "( 1*1048576 @+3145728 ) * 16",
            "size=64M",
            &format!("logfile={}", log.display()),
        ],
    );
    let s = NbdStorage::connect_with(&srv.addr, "", "bs", &opts(true, 1)).unwrap();
    let mut at = 0u64;
    let mut runs = Vec::new();
    while at < 64 << 20 {
        let r = s.data_run(at, (64 << 20) - at).unwrap();
        runs.push((at, r.data, r.length));
        at += r.length;
    }
    drop(s);
    drop(srv);
    let want: Vec<_> = (0..16u64)
        .flat_map(|k| {
            [
                (k * (4 << 20), true, 1 << 20),
                (k * (4 << 20) + (1 << 20), false, 3 << 20),
            ]
        })
        .collect();
    assert_eq!(runs, want);
    let bs: usize = logged(&log)
        .values()
        .map(|ops| ops.get("Extents").copied().unwrap_or(0))
        .sum();
    assert_eq!(bs, 1, "one block status request for 32 queries");
}
