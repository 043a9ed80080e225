//! Server side of the fixed-newstyle negotiation.
//!
//! ```text
//! S: u64 NBDMAGIC, u64 IHAVEOPT, u16 flags (FIXED_NEWSTYLE | NO_ZEROES)
//! C: u32 client flags
//! C: u64 IHAVEOPT, u32 option, u32 length, data          (repeated)
//! S: option replies (REP_SERVER / REP_INFO / REP_META_CONTEXT …, then REP_ACK or an error)
//! EXPORT_NAME ends with: u64 size, u16 transmission flags, [124 zero bytes]
//! GO data:  u32 name length, name, u16 n, n × u16 information request
//! META data: u32 name length, name, u32 n, n × (u32 length, query)
//! ```
//! Answers: GO/INFO (export, name, description, block sizes), LIST, EXPORT_NAME, ABORT,
//! STRUCTURED_REPLY, SET/LIST_META_CONTEXT (`base:allocation`, and `qemu:allocation-depth` when
//! offered), STARTTLS; every other option gets
//! `NBD_REP_ERR_UNSUP`. With TLS configured, everything but STARTTLS and ABORT before the upgrade
//! gets `NBD_REP_ERR_TLS_REQD` (EXPORT_NAME: the server hangs up), as qemu-nbd; without it,
//! STARTTLS gets `NBD_REP_ERR_POLICY`.
use super::proto::*;
use super::Export;
use crate::error::{Error, ErrorCode, Result};
use crate::nbd::transport::Sock;
use openssl::ssl::SslStream;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The negotiation's byte stream: the socket, or a TLS session over it after STARTTLS.
pub(crate) enum Stream {
    /// Plain socket.
    Plain(Sock),
    /// TLS session.
    Tls(Box<SslStream<Sock>>),
}

impl Stream {
    /// Bound every read and write by what is left of the negotiation's time; `false` once none is.
    fn time_left(&self, start: Instant) -> bool {
        let left = HANDSHAKE_LIMIT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        match self {
            Stream::Plain(s) => s.set_timeouts(Some(left)),
            Stream::Tls(t) => t.get_ref().set_timeouts(Some(left)),
        }
        true
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// How long a client may take over the whole negotiation (qemu-nbd's handshake limit).
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Options accepted before the client must pick an export.
const MAX_OPTIONS: u32 = 4096;

/// What a connection agreed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated {
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected (its id is [`META_BASE_ALLOCATION`]).
    pub base_allocation: bool,
    /// `qemu:allocation-depth` was selected (its id is [`META_ALLOCATION_DEPTH`]).
    pub allocation_depth: bool,
    /// The transmission flags sent.
    pub flags: u16,
}

/// The transmission flags of the export for a connection.
pub(crate) fn transmission_flags(export: &Export, structured: bool) -> u16 {
    let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA;
    if export.config.read_only {
        f |= TF_READ_ONLY;
    } else {
        f |= TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_SEND_FAST_ZERO;
    }
    if structured {
        f |= TF_SEND_DF;
    }
    // Every connection drives the same in-process driver and FLUSH flushes it whole, so what one
    // connection flushes is durable for all: multi-conn is safe whenever several may connect.
    if export.config.shared != 1 {
        f |= TF_CAN_MULTI_CONN;
    }
    f
}

fn send(s: &mut Stream, b: &[u8]) -> Result<()> {
    s.write_all(b)
        .map_err(|e| Error::io("NBD server: writing to the client", &e))
}

fn reply(s: &mut Stream, opt: u32, ty: u32, data: &[u8]) -> Result<()> {
    send(s, &option_reply(opt, ty, data))
}

fn err_reply(s: &mut Stream, opt: u32, ty: u32, msg: &str) -> Result<()> {
    reply(s, opt, ty, msg.as_bytes())
}

/// A cursor over an option's payload; every read is bounds-checked.
struct Cur<'a> {
    b: &'a [u8],
    o: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.o.checked_add(n)?;
        let r = self.b.get(self.o..end)?;
        self.o = end;
        Some(r)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| be16(b, 0))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| be32(b, 0))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        if n > MAX_STRING {
            return None;
        }
        self.take(n as usize)
    }
    fn done(&self) -> bool {
        self.o == self.b.len()
    }
}

/// `INFO_EXPORT` + optional name/description/block size, for GO and INFO.
fn send_info(s: &mut Stream, opt: u32, export: &Export, requests: &[u16], tf: u16) -> Result<()> {
    let mut e = Vec::with_capacity(12);
    e.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    e.extend_from_slice(&export.size.to_be_bytes());
    e.extend_from_slice(&tf.to_be_bytes());
    reply(s, opt, REP_INFO, &e)?;
    for &r in requests {
        match r {
            INFO_NAME => {
                let mut b = INFO_NAME.to_be_bytes().to_vec();
                b.extend_from_slice(export.config.export_name.as_bytes());
                reply(s, opt, REP_INFO, &b)?;
            }
            INFO_DESCRIPTION => {
                if let Some(d) = &export.config.description {
                    let mut b = INFO_DESCRIPTION.to_be_bytes().to_vec();
                    b.extend_from_slice(d.as_bytes());
                    reply(s, opt, REP_INFO, &b)?;
                }
            }
            _ => {}
        }
    }
    // Block sizes are always sent: minimum 1, preferred 4 KiB, maximum 32 MiB (qemu-nbd's).
    let mut b = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&4096u32.to_be_bytes());
    b.extend_from_slice(&MAX_BUFFER.to_be_bytes());
    reply(s, opt, REP_INFO, &b)?;
    reply(s, opt, REP_ACK, &[])
}

/// Answer LIST/SET_META_CONTEXT; returns which contexts were selected (`base:allocation`,
/// `qemu:allocation-depth`) for SET, or `None` when an error reply was sent.
fn meta_context(
    s: &mut Stream,
    opt: u32,
    data: &[u8],
    export: &Export,
    structured: bool,
) -> Result<Option<(bool, bool)>> {
    if opt == OPT_SET_META_CONTEXT && !structured {
        err_reply(
            s,
            opt,
            REP_ERR_INVALID,
            "structured replies were not negotiated",
        )?;
        return Ok(None);
    }
    let mut c = Cur { b: data, o: 0 };
    let parsed = (|| {
        let name = c.string()?;
        let n = c.u32()?;
        let mut queries = Vec::new();
        for _ in 0..n {
            queries.push(c.string()?);
        }
        c.done().then_some((name, queries))
    })();
    let Some((name, queries)) = parsed else {
        err_reply(
            s,
            opt,
            REP_ERR_INVALID,
            "malformed metadata context request",
        )?;
        return Ok(None);
    };
    if name != export.config.export_name.as_bytes() {
        err_reply(s, opt, REP_ERR_UNKNOWN, "export not found")?;
        return Ok(None);
    }
    let list = opt == OPT_LIST_META_CONTEXT;
    let depth_offered = export.config.allocation_depth;
    // LIST with no query lists everything; LIST takes a bare namespace ("base:") as a wildcard.
    let wants = |full: &str, ns: &str| {
        (list && queries.is_empty())
            || queries
                .iter()
                .any(|q| *q == full.as_bytes() || (list && *q == ns.as_bytes()))
    };
    let base = wants(BASE_ALLOCATION, "base:");
    let depth = depth_offered && wants(ALLOCATION_DEPTH, "qemu:");
    for (on, id, ctx) in [
        (base, META_BASE_ALLOCATION, BASE_ALLOCATION),
        (depth, META_ALLOCATION_DEPTH, ALLOCATION_DEPTH),
    ] {
        if on {
            let mut b = id.to_be_bytes().to_vec();
            b.extend_from_slice(ctx.as_bytes());
            reply(s, opt, REP_META_CONTEXT, &b)?;
        }
    }
    reply(s, opt, REP_ACK, &[])?;
    Ok(Some((base, depth)))
}

/// Run the negotiation on `sock`. `Ok(None)`: the client aborted or went away (or asked for an
/// unknown export with EXPORT_NAME); `Ok(Some(_))`: transmission starts on the returned stream.
pub(crate) fn negotiate(sock: Sock, export: &Export) -> Result<Option<(Stream, Negotiated)>> {
    let start = Instant::now();
    let mut st = Stream::Plain(sock);
    let s = &mut st;
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    send(s, &hello)?;
    let mut b4 = [0u8; 4];
    read_exact(s, &mut b4, "client flags")?;
    let cflags = u32::from_be_bytes(b4);
    if cflags & !u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) != 0 {
        return Ok(None);
    }
    let no_zeroes = cflags & u32::from(FLAG_NO_ZEROES) != 0;
    let mut neg = Negotiated::default();
    for _ in 0..MAX_OPTIONS {
        if !s.time_left(start) {
            return Ok(None);
        }
        let mut h = [0u8; 16];
        read_exact(s, &mut h, "option header")?;
        if be64(&h, 0) != IHAVEOPT {
            return Ok(None);
        }
        let opt = be32(&h, 8);
        let len = be32(&h, 12);
        if len > MAX_OPTION {
            // Too big to buffer and not worth skipping: say so and hang up (qemu-nbd does too).
            let _ = err_reply(s, opt, REP_ERR_TOO_BIG, "option too long");
            return Ok(None);
        }
        let mut data = vec![0u8; len as usize];
        read_exact(s, &mut data, "option data")?;
        let plain = matches!(s, Stream::Plain(_));
        if export.tls.is_some() && plain && !matches!(opt, OPT_STARTTLS | OPT_ABORT) {
            if opt == OPT_EXPORT_NAME {
                return Ok(None);
            }
            err_reply(s, opt, REP_ERR_TLS_REQD, "TLS is required")?;
            continue;
        }
        match opt {
            OPT_EXPORT_NAME => {
                if data != export.config.export_name.as_bytes() {
                    return Ok(None);
                }
                neg.flags = transmission_flags(export, neg.structured);
                let mut b = export.size.to_be_bytes().to_vec();
                b.extend_from_slice(&neg.flags.to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                send(s, &b)?;
                return Ok(Some((st, neg)));
            }
            OPT_ABORT => {
                let _ = reply(s, opt, REP_ACK, &[]);
                return Ok(None);
            }
            OPT_LIST => {
                if len != 0 {
                    err_reply(s, opt, REP_ERR_INVALID, "LIST takes no data")?;
                    continue;
                }
                let name = export.config.export_name.as_bytes();
                let mut b = (name.len() as u32).to_be_bytes().to_vec();
                b.extend_from_slice(name);
                if let Some(d) = &export.config.description {
                    b.extend_from_slice(d.as_bytes());
                }
                reply(s, opt, REP_SERVER, &b)?;
                reply(s, opt, REP_ACK, &[])?;
            }
            OPT_STRUCTURED_REPLY => {
                if len != 0 {
                    err_reply(s, opt, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data")?;
                } else if neg.structured {
                    err_reply(
                        s,
                        opt,
                        REP_ERR_INVALID,
                        "structured replies already negotiated",
                    )?;
                } else {
                    neg.structured = true;
                    reply(s, opt, REP_ACK, &[])?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                if let Some((base, depth)) = meta_context(s, opt, &data, export, neg.structured)? {
                    if opt == OPT_SET_META_CONTEXT {
                        neg.base_allocation = base;
                        neg.allocation_depth = depth;
                    }
                }
            }
            OPT_INFO | OPT_GO => {
                let mut c = Cur { b: &data, o: 0 };
                let parsed = (|| {
                    let name = c.string()?;
                    let n = c.u16()?;
                    let mut reqs = Vec::new();
                    for _ in 0..n {
                        reqs.push(c.u16()?);
                    }
                    c.done().then_some((name, reqs))
                })();
                let Some((name, reqs)) = parsed else {
                    err_reply(s, opt, REP_ERR_INVALID, "malformed GO/INFO request")?;
                    continue;
                };
                if name != export.config.export_name.as_bytes() {
                    let msg = format!("export '{}' not present", String::from_utf8_lossy(name));
                    err_reply(s, opt, REP_ERR_UNKNOWN, &msg)?;
                    continue;
                }
                let tf = transmission_flags(export, neg.structured);
                send_info(s, opt, export, &reqs, tf)?;
                if opt == OPT_GO {
                    neg.flags = tf;
                    return Ok(Some((st, neg)));
                }
            }
            OPT_STARTTLS => {
                let Some(acceptor) = &export.tls else {
                    err_reply(s, opt, REP_ERR_POLICY, "TLS not configured")?;
                    continue;
                };
                if !plain || len != 0 {
                    err_reply(s, opt, REP_ERR_INVALID, "TLS already negotiated")?;
                    continue;
                }
                reply(s, opt, REP_ACK, &[])?;
                let Stream::Plain(sock) = std::mem::replace(s, Stream::Plain(dummy()?)) else {
                    return Ok(None);
                };
                match acceptor.accept(sock) {
                    Ok(t) => *s = Stream::Tls(Box::new(t)),
                    Err(e) => {
                        return Err(Error::new(
                            ErrorCode::Io,
                            format!("NBD server: TLS handshake failed: {e}"),
                        ))
                    }
                }
            }
            _ => {
                err_reply(s, opt, REP_ERR_UNSUP, "option not supported")?;
            }
        }
    }
    Ok(None)
}

/// A placeholder socket while the real one is moved into the TLS session.
fn dummy() -> Result<Sock> {
    let (a, _) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Error::io("NBD server: creating a socket pair", &e))?;
    Ok(Sock::Unix(a))
}

/// Read and ignore `n` bytes (bounded chunks).
pub(crate) fn skip(s: &mut impl Read, mut n: u64) -> Result<()> {
    let mut buf = [0u8; 65536];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.read_exact(&mut buf[..k])
            .map_err(|e| Error::io("NBD server: reading from the client", &e))?;
        n -= k as u64;
    }
    Ok(())
}
