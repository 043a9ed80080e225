//! The transmission phase of one connection: a reader parses requests (header, then a WRITE's
//! payload once it is known to be bounded) and hands them to a few worker threads; workers run
//! them against the driver and write their replies under one lock, so several requests are in
//! flight and replies may come back in any order (the protocol matches them by cookie).
//!
//! ```text
//! request   u32 REQUEST_MAGIC, u16 flags, u16 type, u64 cookie, u64 offset, u32 length, [data]
//! ```
//! READ answers with structured chunks when negotiated (OFFSET_DATA for data, OFFSET_HOLE for
//! ranges the chain reports as zeros, one DATA chunk with `DF`), BLOCK_STATUS with one chunk per
//! selected context (`base:allocation`, `qemu:allocation-depth`), everything else with simple
//! replies on success; errors are structured ERROR chunks once structured replies are negotiated. Errors follow qemu-nbd: a write
//! to a read-only export is EPERM, a write past the end ENOSPC, any other bad range or flag EINVAL,
//! an unzeroable FAST_ZERO ENOTSUP. A bad magic or an oversized WRITE ends the connection (its
//! payload cannot be skipped safely).
use super::handshake::{skip, Negotiated, Stream};
use super::proto::*;
use super::Export;
use crate::chain::{map_extents, MapExtent};
use crate::nbd::transport::{Channel, ChannelReader};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Longest wait for a client to take a reply before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Worker threads per connection.
const WORKERS: usize = 4;
/// Requests in flight per connection (qemu-nbd's `NBD_MAX_REQUESTS`).
const MAX_IN_FLIGHT: usize = 16;
/// Payload bytes buffered per connection (one maximal request always fits).
const MAX_BYTES: u64 = 64 << 20;
/// Most block status descriptors in one reply.
const MAX_DESCRIPTORS: usize = 1 << 16;
/// Every flag any command may carry.
const KNOWN_FLAGS: u16 = CMDF_FUA | CMDF_NO_HOLE | CMDF_DF | CMDF_REQ_ONE | CMDF_FAST_ZERO;

/// One parsed request.
struct Request {
    flags: u16,
    ty: u16,
    cookie: u64,
    offset: u64,
    length: u32,
    data: Vec<u8>,
    /// Payload bytes charged to the budget.
    cost: u64,
    /// Set when the request is already known to fail with this errno.
    error: Option<(u32, String)>,
}

/// Bounds requests and buffered bytes in flight.
struct Budget {
    m: Mutex<(usize, u64)>,
    cv: Condvar,
}

impl Budget {
    fn acquire(&self, cost: u64) {
        let mut g = self.m.lock().unwrap_or_else(|p| p.into_inner());
        while g.0 >= MAX_IN_FLIGHT || (g.0 > 0 && g.1 + cost > MAX_BYTES) {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.0 += 1;
        g.1 += cost;
    }
    fn release(&self, cost: u64) {
        let mut g = self.m.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        g.1 -= cost;
        self.cv.notify_all();
    }
}

struct Conn<'a> {
    export: &'a Export,
    neg: Negotiated,
    chan: Channel,
    /// Held while one reply is written, so replies never interleave.
    send_lock: Mutex<()>,
    budget: Budget,
}

impl Conn<'_> {
    /// Write one whole reply; a client that went away just loses it.
    fn send(&self, parts: &[&[u8]]) {
        let _g = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        for p in parts {
            if self.chan.write_all(p).is_err() {
                self.chan.shutdown();
                return;
            }
        }
    }

    fn simple(&self, cookie: u64, errno: u32) {
        self.send(&[&simple_reply(errno, cookie)]);
    }

    /// An error reply: a structured ERROR chunk (with the message) once structured replies were
    /// negotiated, as the protocol prefers and qemu-nbd does, else a simple reply.
    fn error(&self, r: &Request, errno: u32, msg: &str) {
        if self.neg.structured {
            self.send(&[&error_chunk(r.cookie, errno, msg)]);
        } else {
            self.simple(r.cookie, errno);
        }
    }

    fn result(&self, r: &Request, res: crate::Result<()>) {
        match res {
            Ok(()) => self.simple(r.cookie, 0),
            Err(e) => self.error(r, errno_of(&e), &e.message),
        }
    }

    /// Run one request and reply.
    fn execute(&self, r: Request) {
        if let Some((errno, msg)) = &r.error {
            self.error(&r, *errno, msg);
            return;
        }
        let d = &self.export.driver;
        let fua = |res: crate::Result<()>| {
            res.and_then(|()| {
                if r.flags & CMDF_FUA != 0 {
                    d.flush()
                } else {
                    Ok(())
                }
            })
        };
        let (off, len) = (r.offset, u64::from(r.length));
        match r.ty {
            CMD_READ => self.read(&r),
            CMD_WRITE => self.result(&r, fua(d.write(off, &r.data))),
            CMD_FLUSH => self.result(&r, d.flush()),
            CMD_TRIM => self.result(&r, fua(d.discard(off, len))),
            CMD_WRITE_ZEROES => {
                let may_unmap = r.flags & CMDF_NO_HOLE == 0;
                if r.flags & CMDF_FAST_ZERO != 0 && !self.fast_zero_ok(off, len, may_unmap) {
                    self.error(&r, ENOTSUP, "zeroing this range would not be fast");
                    return;
                }
                self.result(&r, fua(d.write_zeroes(off, len, may_unmap)))
            }
            CMD_BLOCK_STATUS => self.block_status(&r),
            _ => self.error(&r, EINVAL, "unknown command"),
        }
    }

    /// Whether zeroing `[off, off+len)` is cheap: the range already reads as zeros, or it is
    /// whole clusters that may be unmapped (a metadata change, or a hole punched in a raw file).
    fn fast_zero_ok(&self, off: u64, len: u64, may_unmap: bool) -> bool {
        let raw = self.export.driver.format_name() == "raw";
        let aligned = off.is_multiple_of(self.export.cluster)
            && (len.is_multiple_of(self.export.cluster) || off + len == self.export.size);
        if may_unmap && (raw || aligned) {
            return true;
        }
        self.extents(off, len, usize::MAX, allocation_flags)
            .is_some_and(|v| v.iter().all(|&(_, _, f)| f & STATE_ZERO != 0))
    }

    /// Chain status of `[off, off+len)` as `(start, length, key)` runs, adjacent runs with one
    /// key merged; `None` on an error. At most `max` runs (the rest of the range is then not
    /// covered).
    fn extents(
        &self,
        off: u64,
        len: u64,
        max: usize,
        key: impl Fn(&MapExtent) -> u32,
    ) -> Option<Vec<(u64, u64, u32)>> {
        let mut out: Vec<(u64, u64, u32)> = Vec::new();
        let end = off + len;
        let mut pos = off;
        while pos < end {
            let v = map_extents(self.export.driver.as_ref(), pos, end - pos).ok()?;
            if v.is_empty() {
                return None;
            }
            for e in v {
                if e.start != pos || e.length == 0 {
                    return None;
                }
                let l = e.length.min(end - pos);
                let k = key(&e);
                match out.last_mut() {
                    Some(last) if last.2 == k => last.1 += l,
                    _ => {
                        if out.len() == max {
                            return Some(out);
                        }
                        out.push((pos, l, k));
                    }
                }
                pos += l;
                if pos >= end {
                    break;
                }
            }
        }
        Some(out)
    }

    fn read(&self, r: &Request) {
        let d = &self.export.driver;
        let len = r.length as usize;
        if !self.neg.structured {
            let mut buf = vec![0u8; len];
            match d.read(r.offset, &mut buf) {
                Ok(()) => self.send(&[&simple_reply(0, r.cookie), &buf]),
                Err(e) => self.simple(r.cookie, errno_of(&e)),
            }
            return;
        }
        if len == 0 {
            self.send(&[&chunk_header(REPLY_FLAG_DONE, REPLY_NONE, r.cookie, 0)]);
            return;
        }
        // Holes where the chain reads as zeros, unless the client forbids fragmenting.
        let runs = if r.flags & CMDF_DF != 0 {
            None
        } else {
            self.extents(r.offset, len as u64, usize::MAX, allocation_flags)
        };
        let runs = runs.unwrap_or_else(|| vec![(r.offset, len as u64, 0)]);
        let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(runs.len());
        for (i, &(start, l, state)) in runs.iter().enumerate() {
            let flags = if i + 1 == runs.len() {
                REPLY_FLAG_DONE
            } else {
                0
            };
            if state & STATE_ZERO != 0 {
                let mut c = chunk_header(flags, REPLY_OFFSET_HOLE, r.cookie, 12).to_vec();
                c.extend_from_slice(&start.to_be_bytes());
                c.extend_from_slice(&(l as u32).to_be_bytes());
                chunks.push(c);
            } else {
                let mut c = Vec::with_capacity(28 + l as usize);
                c.extend_from_slice(&chunk_header(
                    flags,
                    REPLY_OFFSET_DATA,
                    r.cookie,
                    8 + l as u32,
                ));
                c.extend_from_slice(&start.to_be_bytes());
                c.resize(28 + l as usize, 0);
                if let Err(e) = d.read(start, &mut c[28..]) {
                    self.error(r, errno_of(&e), &e.message);
                    return;
                }
                chunks.push(c);
            }
        }
        let parts: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        self.send(&parts);
    }

    /// One BLOCK_STATUS chunk per selected context, the last one flagged DONE.
    fn block_status(&self, r: &Request) {
        let max = if r.flags & CMDF_REQ_ONE != 0 {
            1
        } else {
            MAX_DESCRIPTORS
        };
        let mut contexts: Vec<(u32, ContextValue)> = Vec::new();
        if self.neg.base_allocation {
            contexts.push((META_BASE_ALLOCATION, allocation_flags));
        }
        if self.neg.allocation_depth {
            contexts.push((META_ALLOCATION_DEPTH, allocation_depth));
        }
        let mut chunks = Vec::with_capacity(contexts.len());
        for (i, &(id, key)) in contexts.iter().enumerate() {
            let Some(runs) = self.extents(r.offset, u64::from(r.length), max, key) else {
                self.error(r, EIO, "block status failed");
                return;
            };
            let mut b = Vec::with_capacity(24 + 8 * runs.len());
            let done = if i + 1 == contexts.len() {
                REPLY_FLAG_DONE
            } else {
                0
            };
            b.extend_from_slice(&chunk_header(
                done,
                REPLY_BLOCK_STATUS,
                r.cookie,
                (4 + 8 * runs.len()) as u32,
            ));
            b.extend_from_slice(&id.to_be_bytes());
            for (_, l, v) in runs {
                b.extend_from_slice(&(l as u32).to_be_bytes());
                b.extend_from_slice(&v.to_be_bytes());
            }
            chunks.push(b);
        }
        let parts: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        self.send(&parts);
    }

    /// Validate a request header; `Err(())` ends the connection.
    fn check(&self, r: &mut Request) -> std::result::Result<(), ()> {
        let ro = self.export.config.read_only;
        let size = self.export.size;
        let end_ok = r
            .offset
            .checked_add(u64::from(r.length))
            .is_some_and(|e| e <= size);
        let write_like = matches!(r.ty, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
        let err = |e: u32, m: &str| Some((e, m.to_string()));
        r.error = if r.flags & !KNOWN_FLAGS != 0 {
            err(EINVAL, "unknown command flags")
        } else if r.flags & CMDF_DF != 0 && (r.ty != CMD_READ || !self.neg.structured) {
            err(EINVAL, "DF flag on a request that cannot take it")
        } else if !matches!(
            r.ty,
            CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES | CMD_BLOCK_STATUS
        ) {
            err(EINVAL, "unknown command")
        } else if matches!(r.ty, CMD_READ | CMD_WRITE) && r.length > MAX_BUFFER {
            err(EINVAL, "request larger than the 32 MiB maximum")
        } else if write_like && ro {
            err(EPERM, "export is read-only")
        } else if r.ty == CMD_BLOCK_STATUS
            && !(self.neg.base_allocation || self.neg.allocation_depth)
        {
            err(EINVAL, "no metadata context was negotiated")
        } else if r.ty == CMD_BLOCK_STATUS && r.length == 0 {
            err(EINVAL, "zero-length block status")
        } else if r.ty != CMD_FLUSH && !end_ok {
            if matches!(r.ty, CMD_WRITE | CMD_WRITE_ZEROES) {
                err(ENOSPC, "operation past the end of the export")
            } else {
                err(EINVAL, "operation past the end of the export")
            }
        } else {
            None
        };
        if r.ty == CMD_WRITE && r.length > MAX_BUFFER {
            return Err(());
        }
        Ok(())
    }
}

/// How a metadata context values an extent.
type ContextValue = fn(&MapExtent) -> u32;

/// `base:allocation` flags of an extent: HOLE unless it holds data, ZERO if it reads as zeros
/// (qemu-nbd's mapping of block status).
fn allocation_flags(e: &MapExtent) -> u32 {
    (if e.data { 0 } else { STATE_HOLE }) | if e.zero { STATE_ZERO } else { 0 }
}

/// `qemu:allocation-depth` of an extent: 0 when no layer allocates it, else the layer's
/// 1-based depth.
fn allocation_depth(e: &MapExtent) -> u32 {
    if e.present {
        e.depth + 1
    } else {
        0
    }
}

fn worker(c: &Conn<'_>, rx: &Mutex<Receiver<Request>>) {
    loop {
        let r = {
            let g = rx.lock().unwrap_or_else(|p| p.into_inner());
            g.recv()
        };
        let Ok(r) = r else { return };
        let cost = r.cost;
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.execute(r)));
        if res.is_err() {
            // A driver bug must not take the server down; the client loses this connection.
            c.chan.shutdown();
        }
        c.budget.release(cost);
    }
}

/// Serve requests on `stream` until the client disconnects, sends DISC, or misbehaves.
pub(crate) fn run(stream: Stream, export: &Export, neg: Negotiated) {
    let chan = match stream {
        Stream::Plain(s) => Channel::plain(s, WRITE_TIMEOUT),
        Stream::Tls(t) => match Channel::tls(*t, WRITE_TIMEOUT) {
            Ok(c) => c,
            Err(_) => return,
        },
    };
    let conn = Conn {
        export,
        neg,
        chan,
        send_lock: Mutex::new(()),
        budget: Budget {
            m: Mutex::new((0, 0)),
            cv: Condvar::new(),
        },
    };
    let (tx, rx) = sync_channel::<Request>(MAX_IN_FLIGHT);
    let rx = Mutex::new(rx);
    let mut sock = ChannelReader(&conn.chan);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| worker(&conn, &rx));
        }
        loop {
            let mut h = [0u8; 28];
            if read_exact(&mut sock, &mut h, "request").is_err() || be32(&h, 0) != REQUEST_MAGIC {
                break;
            }
            let mut r = Request {
                flags: be16(&h, 4),
                ty: be16(&h, 6),
                cookie: be64(&h, 8),
                offset: be64(&h, 16),
                length: be32(&h, 24),
                data: Vec::new(),
                cost: 0,
                error: None,
            };
            if r.ty == CMD_DISC {
                break;
            }
            if conn.check(&mut r).is_err() {
                conn.error(&r, EINVAL, "request larger than the 32 MiB maximum");
                break;
            }
            r.cost = match r.ty {
                CMD_READ | CMD_WRITE if r.error.is_none() => u64::from(r.length),
                _ => 0,
            };
            conn.budget.acquire(r.cost);
            if r.ty == CMD_WRITE {
                if r.error.is_some() {
                    if skip(&mut sock, u64::from(r.length)).is_err() {
                        conn.budget.release(r.cost);
                        break;
                    }
                } else {
                    r.data = vec![0u8; r.length as usize];
                    if read_exact(&mut sock, &mut r.data, "write data").is_err() {
                        conn.budget.release(r.cost);
                        break;
                    }
                }
            }
            if tx.send(r).is_err() {
                break;
            }
        }
        // Let the workers finish what is queued, then hang up.
        drop(tx);
    });
    conn.chan.shutdown();
}
