//! Robustness of the NBD client against hostile or broken servers.
//!
//! - The reply parser and the negotiation run over many random and mutated byte streams
//!   (in memory): every stream ends in `Ok` or a typed error, never a panic, a hang, or a large
//!   allocation.
//! - A server that hangs up at every byte of the handshake and of the replies: this uses a
//!   HAND-WRITTEN FAKE SERVER, because no real server (qemu-nbd, nbdkit, nbd-server) can be made
//!   to cut the connection at a chosen byte. Every cut ends in a clean error within seconds; only
//!   the uncut script succeeds (and then returns the scripted data).
use qimg_core::nbd::handshake;
use qimg_core::nbd::reply::{read_message, Pending};
use qimg_core::nbd::wire::*;
use qimg_core::nbd::{Address, ConnectOptions, NbdStorage};
use qimg_core::{ErrorCode, Storage};
use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic pseudo-random bytes, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn chunk(flags: u16, ty: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&STRUCTURED_MAGIC.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&ty.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn simple(err: u32, cookie: u64, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&SIMPLE_MAGIC.to_be_bytes());
    b.extend_from_slice(&err.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// A valid structured reply stream for: read(1) of 4096 at 0, block status(2), write(3).
fn valid_stream() -> Vec<u8> {
    let mut s = Vec::new();
    let mut d = 0u64.to_be_bytes().to_vec();
    d.extend(std::iter::repeat_n(0xab, 1024));
    s.extend(chunk(0, REPLY_OFFSET_DATA, 1, &d));
    let mut h = 1024u64.to_be_bytes().to_vec();
    h.extend(3072u32.to_be_bytes());
    s.extend(chunk(REPLY_FLAG_DONE, REPLY_OFFSET_HOLE, 1, &h));
    let mut bs = 1u32.to_be_bytes().to_vec();
    bs.extend(4096u32.to_be_bytes());
    bs.extend(3u32.to_be_bytes());
    s.extend(chunk(REPLY_FLAG_DONE, REPLY_BLOCK_STATUS, 2, &bs));
    let mut e = 5u32.to_be_bytes().to_vec();
    e.extend(2u16.to_be_bytes());
    e.extend(b"no");
    s.extend(chunk(REPLY_FLAG_DONE, 32769, 3, &e));
    s
}

/// Feed `stream` to the parser until it ends; returns the requests completed.
fn parse_all(stream: &[u8], structured: bool) -> Vec<(u64, Pending)> {
    let mut inbox: HashMap<u64, Pending> = HashMap::new();
    inbox.insert(1, Pending::new(CMD_READ, 0, 4096));
    inbox.insert(2, Pending::new(CMD_BLOCK_STATUS, 0, 4096));
    inbox.insert(3, Pending::new(CMD_WRITE, 0, 4096));
    let mut local = HashMap::new();
    let mut r = Cursor::new(stream);
    let mut done = Vec::new();
    // Each message consumes at least 4 bytes, so this loop is bounded by the stream length.
    for _ in 0..stream.len() / 4 + 2 {
        let mut fetch = |c: u64| inbox.remove(&c);
        match read_message(&mut r, &mut local, &mut fetch, structured) {
            Ok(Some(p)) => done.push(p),
            Ok(None) => {}
            Err(e) => {
                assert!(
                    matches!(e.code, ErrorCode::Io | ErrorCode::Corrupt),
                    "unexpected code: {e}"
                );
                break;
            }
        }
    }
    done
}

#[test]
fn the_valid_stream_parses() {
    let done = parse_all(&valid_stream(), true);
    assert_eq!(done.len(), 3);
    let read = &done[0].1;
    assert!(read.data[..1024].iter().all(|&b| b == 0xab));
    assert!(read.data[1024..].iter().all(|&b| b == 0));
    assert_eq!(done[1].1.status, vec![(1, 4096, 3)]);
    assert_eq!(done[2].1.error.as_ref().unwrap().errno, Some(5));
}

#[test]
fn hostile_reply_streams_never_panic_or_succeed_wrongly() {
    let base = valid_stream();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut s = base.clone();
        match round % 4 {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(s.len() as u64) as usize;
                    s[i] ^= 1 << rng.below(8);
                }
            }
            1 => s.truncate(rng.below(s.len() as u64) as usize),
            2 => {
                // Random bytes after a valid magic, to reach the length checks.
                let n = rng.below(64) as usize;
                s = if rng.below(2) == 0 {
                    STRUCTURED_MAGIC.to_be_bytes().to_vec()
                } else {
                    SIMPLE_MAGIC.to_be_bytes().to_vec()
                };
                s.extend((0..n).map(|_| rng.next() as u8));
                // Aim cookies at known requests half of the time (offset 8 in both layouts).
                if s.len() >= 16 && rng.below(2) == 0 {
                    let c = 1 + rng.below(3);
                    s[8..16].copy_from_slice(&c.to_be_bytes());
                }
            }
            _ => {
                let i = rng.below(s.len() as u64) as usize;
                let v = rng.next().to_be_bytes();
                let n = v.len().min(s.len() - i);
                s[i..i + n].copy_from_slice(&v[..n]);
            }
        }
        for structured in [true, false] {
            for (cookie, p) in parse_all(&s, structured) {
                // A completed read without error must be fully covered.
                if p.ty == CMD_READ && p.error.is_none() {
                    assert_eq!(p.covered, 4096, "round {round} cookie {cookie}");
                }
            }
        }
    }
    // Simple replies, including a good read.
    let mut s = simple(0, 1, &[7u8; 4096]);
    s.extend(simple(22, 3, &[]));
    let done = parse_all(&s, false);
    assert_eq!(done.len(), 2);
    assert!(done[0].1.data.iter().all(|&b| b == 7));
    assert_eq!(
        done[1].1.error.as_ref().unwrap().code,
        ErrorCode::InvalidArgument
    );
    // A read reply that leaves a gap is an error, not zeros.
    let e = chunk(REPLY_FLAG_DONE, REPLY_NONE, 1, &[]);
    assert!(parse_all(&e, true).is_empty());
    // A huge chunk length is refused before any allocation.
    let big = chunk(0, REPLY_BLOCK_STATUS, 2, &[]);
    let mut big = big[..big.len()].to_vec();
    let n = big.len();
    big[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse_all(&big, true).is_empty());
}

/// Reader over a fixed stream, writer into nothing.
struct Duplex(Cursor<Vec<u8>>);
impl Read for Duplex {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
impl Write for Duplex {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn opt_reply(opt: u32, ty: u32, data: &[u8]) -> Vec<u8> {
    let mut b = REPLY_MAGIC.to_be_bytes().to_vec();
    b.extend(opt.to_be_bytes());
    b.extend(ty.to_be_bytes());
    b.extend((data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// The server side of a structured negotiation of a 1 MiB export, one entry per option.
fn negotiation_script() -> Vec<Vec<u8>> {
    let mut greet = NBDMAGIC.to_be_bytes().to_vec();
    greet.extend(IHAVEOPT.to_be_bytes());
    greet.extend((FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    let sr = opt_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]);
    let mut ctx = 1u32.to_be_bytes().to_vec();
    ctx.extend(b"base:allocation");
    let mut meta = opt_reply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, &ctx);
    meta.extend(opt_reply(OPT_SET_META_CONTEXT, REP_ACK, &[]));
    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
    info.extend((1u64 << 20).to_be_bytes());
    info.extend((TF_HAS_FLAGS | TF_SEND_FLUSH).to_be_bytes());
    let mut go = opt_reply(OPT_GO, REP_INFO, &info);
    go.extend(opt_reply(OPT_GO, REP_ACK, &[]));
    vec![greet, sr, meta, go]
}

#[test]
fn hostile_negotiation_streams_never_panic() {
    let base: Vec<u8> = negotiation_script().concat();
    let mut d = Duplex(Cursor::new(base.clone()));
    handshake::greet(&mut d).unwrap();
    let e = handshake::negotiate(&mut d, "").unwrap();
    assert_eq!(e.size, 1 << 20);
    assert_eq!(e.base_allocation, Some(1));
    let mut rng = Rng(42);
    for round in 0..20_000 {
        let mut s = base.clone();
        if round % 2 == 0 {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(s.len() as u64) as usize;
                s[i] = rng.next() as u8;
            }
        } else {
            s.truncate(rng.below(s.len() as u64) as usize);
        }
        let mut d = Duplex(Cursor::new(s));
        if handshake::greet(&mut d).is_ok() {
            if let Ok(e) = handshake::negotiate(&mut d, "") {
                assert!(e.size <= i64::MAX as u64);
                assert!(e.min_block.is_power_of_two() && e.max_block >= e.min_block);
            }
        }
    }
}

/// One phase of the fake server: read the client's message, then answer.
enum Expect {
    /// Client flags (4 bytes).
    Flags,
    /// One option request.
    Option,
    /// One transmission request (with data for writes).
    Request,
}

fn run_script(structured: bool) {
    let mut phases: Vec<(Expect, Vec<u8>)> = Vec::new();
    let neg = negotiation_script();
    let greeting = neg[0].clone();
    phases.push((Expect::Flags, Vec::new()));
    if !structured {
        let mut info = INFO_EXPORT.to_be_bytes().to_vec();
        info.extend((1u64 << 20).to_be_bytes());
        info.extend(TF_HAS_FLAGS.to_be_bytes());
        let mut go = opt_reply(OPT_GO, REP_INFO, &info);
        go.extend(opt_reply(OPT_GO, REP_ACK, &[]));
        phases.push((
            Expect::Option,
            opt_reply(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]),
        ));
        phases.push((Expect::Option, go));
        phases.push((Expect::Request, simple(0, 1, &[0x5a; 4096])));
    } else {
        phases.push((Expect::Option, neg[1].clone()));
        phases.push((Expect::Option, neg[2].clone()));
        phases.push((Expect::Option, neg[3].clone()));
        let mut d = 0u64.to_be_bytes().to_vec();
        d.extend([0x5a; 4096]);
        let mut r = chunk(0, REPLY_OFFSET_DATA, 1, &d);
        r.extend(chunk(REPLY_FLAG_DONE, REPLY_NONE, 1, &[]));
        phases.push((Expect::Request, r));
        let mut bs = 1u32.to_be_bytes().to_vec();
        bs.extend((1u32 << 20).to_be_bytes());
        bs.extend(0u32.to_be_bytes());
        phases.push((
            Expect::Request,
            chunk(REPLY_FLAG_DONE, REPLY_BLOCK_STATUS, 2, &bs),
        ));
    }
    let total: usize = greeting.len() + phases.iter().map(|p| p.1.len()).sum::<usize>();
    for cut in 0..=total {
        let script: Vec<(Expect, Vec<u8>)> = phases
            .iter()
            .map(|(e, a)| {
                let e = match e {
                    Expect::Flags => Expect::Flags,
                    Expect::Option => Expect::Option,
                    Expect::Request => Expect::Request,
                };
                (e, a.clone())
            })
            .collect();
        let (addr, h) = fake_server(greeting.clone(), script, cut);
        let t0 = Instant::now();
        let o = ConnectOptions {
            read_only: true,
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let r = NbdStorage::connect_with(&addr, "", "fake", &o).and_then(|s| {
            let mut b = vec![0u8; 4096];
            s.read_at(&mut b, 0)?;
            assert!(b.iter().all(|&x| x == 0x5a), "cut {cut}: wrong data");
            let run = s.data_run(0, 1 << 20)?;
            Ok(run)
        });
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "cut {cut} (structured {structured}): took {:?}",
            t0.elapsed()
        );
        if cut == total {
            let run = r.unwrap_or_else(|e| panic!("uncut script failed: {e}"));
            if structured {
                assert!(run.data && run.length == 1 << 20);
            }
        } else {
            let e = r.expect_err(&format!("cut {cut} succeeded"));
            assert!(
                matches!(
                    e.code,
                    ErrorCode::Io | ErrorCode::Corrupt | ErrorCode::WrongFormat
                ),
                "cut {cut}: {e}"
            );
        }
        h.join().unwrap();
    }
}

/// The fake server: sends `greeting`, then for each phase reads the client's message and sends
/// the scripted answer, hanging up once `cut` bytes in all have been sent.
fn fake_server(
    greeting: Vec<u8>,
    script: Vec<(Expect, Vec<u8>)>,
    cut: usize,
) -> (Address, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else { return };
        c.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut budget = cut;
        let mut send = |c: &mut std::net::TcpStream, b: &[u8]| -> bool {
            let n = b.len().min(budget);
            let _ = c.write_all(&b[..n]);
            budget -= n;
            n == b.len()
        };
        if !send(&mut c, &greeting) {
            return;
        }
        for (expect, answer) in &script {
            let ok = match expect {
                Expect::Flags => c.read_exact(&mut [0u8; 4]).is_ok(),
                Expect::Option => {
                    let mut h = [0u8; 16];
                    c.read_exact(&mut h).is_ok() && {
                        let n = u32::from_be_bytes(h[12..16].try_into().unwrap());
                        c.read_exact(&mut vec![0u8; n as usize]).is_ok()
                    }
                }
                Expect::Request => {
                    let mut h = [0u8; 28];
                    c.read_exact(&mut h).is_ok() && {
                        let ty = u16::from_be_bytes([h[6], h[7]]);
                        let n = u32::from_be_bytes(h[24..28].try_into().unwrap());
                        ty != CMD_WRITE || c.read_exact(&mut vec![0u8; n as usize]).is_ok()
                    }
                }
            };
            if !ok || !send(&mut c, answer) {
                return;
            }
        }
        // Wait for the client's disconnect request before hanging up.
        let _ = c.read(&mut [0u8; 28]);
    });
    (Address::Tcp("127.0.0.1".into(), port), h)
}

#[test]
fn a_server_hanging_up_at_every_byte_is_a_clean_error() {
    run_script(true);
    run_script(false);
}

#[test]
fn a_server_that_never_speaks_times_out() {
    // Hand-written fake (no real server can be told to stay silent): accepts and says nothing.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(c);
    });
    let o = ConnectOptions {
        read_only: true,
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let t0 = Instant::now();
    let e =
        NbdStorage::connect_with(&Address::Tcp("127.0.0.1".into(), port), "", "x", &o).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.code, ErrorCode::Io);
    assert!(e.message.contains("did not answer"), "{e}");
    h.join().unwrap();
}
