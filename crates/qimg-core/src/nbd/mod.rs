//! The `nbd` protocol node: a [`Storage`] over an NBD export (QEMU's NBD client role), so every
//! format driver works over NBD (`qcow2` over `nbd://…`, raw over `nbd+unix://…`).
//!
//! [`handshake`] negotiates (fixed newstyle, [`tls`] via STARTTLS, structured replies,
//! `base:allocation` and `qemu:allocation-depth`, `OPT_GO`, `OPT_LIST`); [`conn`] runs the
//! transmission phase with several requests in flight per connection (a reader thread matches
//! replies to requests by cookie and reads data straight into the caller's buffer); [`pool`]
//! opens several connections when the server allows it (multi-conn) and spreads requests over
//! them; [`reply`] parses replies, bounding everything before it is buffered. A read or write is
//! cut into requests of at most [`REQUEST_SIZE`] (and the server's maximum block size) that are
//! all in flight at once; flush (on every connection), FUA writes, trim, write zeroes (`NO_HOLE`
//! unless unmapping is allowed, `FAST_ZERO` on request) and block status are supported. A server
//! that stops answering hits the timeout, and a malformed or out-of-range reply is an error,
//! never data.
mod align;
pub mod conn;
pub mod handshake;
pub mod pool;
pub mod reply;
mod status;
pub mod tls;
pub mod transport;
pub mod wire;

use crate::error::{Error, ErrorCode, Result};
use crate::storage::{DataRun, Storage};
use conn::{Conn, Ticket};
pub use handshake::{Export, ExportEntry};
use pool::Pool;
pub use pool::{DEFAULT_CONNECTIONS, MAX_CONNECTIONS};
use std::sync::Arc;
use std::time::Duration;
pub use tls::{TlsConfig, TlsCreds};
use transport::{Channel, Sock};
use wire::*;

/// Where the NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port` over TCP.
    Tcp(String, u16),
    /// A Unix socket path.
    Unix(String),
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Open read-only.
    pub read_only: bool,
    /// TLS (required when set: no plaintext fallback).
    pub tls: Option<TlsConfig>,
    /// Longest wait for connecting, for each negotiation step and for each request's reply.
    pub timeout: Duration,
    /// Connections to open when the server advertises multi-conn (`multi-conn=N`, default
    /// [`DEFAULT_CONNECTIONS`]; 1 for a single connection; at most [`MAX_CONNECTIONS`]).
    pub connections: usize,
    /// Send every write with `NBD_CMD_FLAG_FUA` (or follow it with a flush when the server has
    /// no FUA): the `writethrough` and `directsync` cache modes, as QEMU's block layer sets FUA
    /// on writes when the write cache is off.
    pub write_through: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            read_only: false,
            tls: None,
            timeout: IO_TIMEOUT,
            connections: DEFAULT_CONNECTIONS,
            write_through: false,
        }
    }
}

/// An NBD export as a byte store.
pub struct NbdStorage {
    name: String,
    export: Export,
    read_only: bool,
    conns: Arc<Pool>,
    /// Block status windows fetched ahead (read-only opens; see [`status`]).
    status_cache: std::sync::Mutex<Vec<status::Window>>,
    /// Serialises read-modify-write of partial blocks (servers with a minimum block size).
    rmw: std::sync::Mutex<()>,
    /// Every write with FUA ([`ConnectOptions::write_through`]).
    write_through: bool,
}

impl std::fmt::Debug for NbdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdStorage")
            .field("name", &self.name)
            .field("export", &self.export)
            .finish()
    }
}

/// How long a request may wait for its reply (default).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest request a read or write is cut into (several are in flight at once, spread over the
/// connections; the server's maximum block size may lower it).
pub const REQUEST_SIZE: u64 = 1 << 20;

/// Connect, greet, and start TLS when configured: the stream ready for options. `keep` sees the
/// socket first (to keep a handle that can shut it down).
fn open_stream(
    addr: &Address,
    tls: Option<&TlsConfig>,
    timeout: Duration,
    keep: &dyn Fn(&Sock),
) -> Result<Stream> {
    let mut sock = Sock::connect(addr, timeout)?;
    keep(&sock);
    handshake::greet(&mut sock)?;
    let Some(cfg) = tls else {
        return Ok(Stream::Plain(sock));
    };
    handshake::starttls(&mut sock)?;
    let connector = cfg.creds.connector()?;
    let mut c = connector
        .configure()
        .map_err(|e| Error::new(ErrorCode::Io, format!("TLS: {e}")))?;
    let host = match (&cfg.hostname, addr) {
        (Some(h), _) => Some(h.clone()),
        (None, Address::Tcp(h, _)) => Some(h.clone()),
        (None, Address::Unix(_)) => None,
    };
    let x509 = matches!(cfg.creds, TlsCreds::X509 { .. });
    if host.is_none() || !x509 {
        c.set_verify_hostname(false);
        c.set_use_server_name_indication(false);
    }
    let ssl = c
        .connect(host.as_deref().unwrap_or("localhost"), sock)
        .map_err(|e| {
            let detail = match &e {
                openssl::ssl::HandshakeError::Failure(m) => {
                    let v = m.ssl().verify_result();
                    if v == openssl::x509::X509VerifyResult::OK {
                        m.error().to_string()
                    } else {
                        format!("certificate verification failed: {}", v.error_string())
                    }
                }
                other => other.to_string(),
            };
            Error::new(
                ErrorCode::Io,
                format!("TLS handshake with the NBD server failed: {detail}"),
            )
        })?;
    Ok(Stream::Tls(Box::new(ssl)))
}

/// Open a connection to `export` and negotiate it: the stream ready for transmission.
fn negotiate_stream(
    addr: &Address,
    export: &str,
    o: &ConnectOptions,
    keep: &dyn Fn(&Sock),
) -> Result<(Stream, Export)> {
    let mut s = open_stream(addr, o.tls.as_ref(), o.timeout, keep)?;
    let e = handshake::negotiate(&mut s, export)?;
    Ok((s, e))
}

/// Start the transmission phase on a negotiated stream.
fn start_conn(s: Stream, e: Export, o: &ConnectOptions) -> Result<Arc<Conn>> {
    let chan = match s {
        Stream::Plain(sock) => Channel::plain(sock, o.timeout),
        Stream::Tls(ssl) => Channel::tls(*ssl, o.timeout)?,
    };
    Ok(Conn::start(chan, e.structured, o.timeout))
}

/// The negotiation stream, plain or TLS.
enum Stream {
    Plain(Sock),
    Tls(Box<openssl::ssl::SslStream<Sock>>),
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
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

/// List the exports of the server at `addr` (`NBD_OPT_LIST`), as `nbdinfo --list` does.
pub fn list_exports(
    addr: &Address,
    tls: Option<&TlsConfig>,
    timeout: Duration,
) -> Result<Vec<ExportEntry>> {
    let mut s = open_stream(addr, tls, timeout, &|_| {})?;
    handshake::list(&mut s)
}

impl NbdStorage {
    /// Connect to `addr`, negotiate `export`, and open it (read-only when asked), without TLS
    /// and with the default timeout.
    pub fn connect(addr: &Address, export: &str, read_only: bool, name: &str) -> Result<Self> {
        let o = ConnectOptions {
            read_only,
            ..Default::default()
        };
        Self::connect_with(addr, export, name, &o)
    }

    /// Connect with explicit options (TLS, timeout).
    pub fn connect_with(
        addr: &Address,
        export: &str,
        name: &str,
        o: &ConnectOptions,
    ) -> Result<Self> {
        let (s, export_info) =
            negotiate_stream(addr, export, o, &|_| {}).map_err(|e| e.with_path(name))?;
        if !o.read_only && export_info.flags & TF_READ_ONLY != 0 {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                "NBD export is read-only but a writable open was requested",
            )
            .with_path(name));
        }
        let conns = Pool::new(start_conn(s, export_info, o).map_err(|e| e.with_path(name))?);
        let n = o.connections.clamp(1, MAX_CONNECTIONS);
        if n > 1 && export_info.flags & TF_CAN_MULTI_CONN != 0 {
            conns.open_extra(n - 1, addr, export, o, export_info);
            conns.wait_ready(pool::READY_WAIT);
        }
        Ok(NbdStorage {
            name: name.to_string(),
            export: export_info,
            read_only: o.read_only,
            conns,
            status_cache: std::sync::Mutex::new(Vec::new()),
            rmw: std::sync::Mutex::new(()),
            write_through: o.write_through,
        })
    }

    /// Wait (at most `max`) until the extra connections still negotiating have joined or failed.
    pub fn wait_for_connections(&self, max: Duration) {
        self.conns.wait_ready(max);
    }

    /// Requests sent on each open connection so far (one entry per connection).
    pub fn requests_per_connection(&self) -> Vec<u64> {
        self.conns.all().iter().map(|c| c.requests_sent()).collect()
    }

    /// What negotiation settled (size, flags, block sizes, contexts).
    pub fn export(&self) -> Export {
        self.export
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(
                Error::new(ErrorCode::ReadOnly, "the NBD export is opened read-only")
                    .with_path(&self.name),
            );
        }
        Ok(())
    }

    fn call(
        &self,
        ty: u16,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> Result<reply::Pending> {
        self.conns
            .pick()
            .call(ty, flags, offset, length, data)
            .map_err(|e| e.with_path(&self.name))
    }

    /// Wait for every ticket (all of them, even after a failure): the first error, if any.
    fn wait_all(&self, tickets: Vec<Ticket>) -> Result<()> {
        let mut first = None;
        for t in tickets {
            if let Err(e) = t.wait() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), |e| Err(e.with_path(&self.name)))
    }

    /// The size the aligned range `[offset, offset+len)` is cut into: [`REQUEST_SIZE`] or the
    /// server's maximum, and small enough that every connection gets a piece.
    fn part_size(&self, len: u64) -> u64 {
        let a = (self.export.min_block as u64).max(1);
        let spread = len.div_ceil(self.conns.all().len() as u64).div_ceil(a) * a;
        let p = self
            .max_request()
            .min(REQUEST_SIZE)
            .min(spread.max(256 << 10));
        (p / a * a).max(a)
    }

    /// Write requests for an aligned range (all in flight at once).
    fn write_aligned(&self, buf: &[u8], offset: u64, flags: u16) -> Result<()> {
        let step = self.part_size(buf.len() as u64) as usize;
        self.submit_parts(buf.len(), step, flags, |at, n| {
            (
                reply::Pending::new(CMD_WRITE, offset + at as u64, n as u32),
                &buf[at..at + n],
            )
        })
    }

    /// Submit one request per `step`-sized part of a `len`-byte range (`part(at, n)` gives each
    /// part's request and payload), all in flight at once, then wait for every reply. On a
    /// failed submission the tickets already taken are waited for by their drop.
    fn submit_parts<'a>(
        &self,
        len: usize,
        step: usize,
        flags: u16,
        mut part: impl FnMut(usize, usize) -> (reply::Pending, &'a [u8]),
    ) -> Result<()> {
        let mut tickets = Vec::with_capacity(len.div_ceil(step));
        let mut at = 0usize;
        while at < len {
            let n = (len - at).min(step);
            let (p, data) = part(at, n);
            match self.conns.pick().submit(flags, p, data) {
                Ok(t) => tickets.push(t),
                Err(e) => {
                    drop(tickets);
                    return Err(e.with_path(&self.name));
                }
            }
            at += n;
        }
        self.wait_all(tickets)
    }

    /// Read requests for an aligned range inside the export, all in flight at once, each reply
    /// read straight into its part of `buf`.
    fn read_aligned(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let step = self.part_size(buf.len() as u64) as usize;
        let base = buf.as_mut_ptr();
        self.submit_parts(buf.len(), step, 0, |at, n| {
            // SAFETY: `base + at .. + n` lies inside `buf`, parts do not overlap, and `buf` is
            // borrowed mutably until every ticket has been waited for (in `submit_parts`, or by
            // the tickets' drop on an early return), so nothing else touches the memory meanwhile.
            let p =
                unsafe { reply::Pending::with_dest(offset + at as u64, n as u32, base.add(at), n) };
            (p, &[])
        })
    }

    /// Write with FUA when `fua` (durable when it returns; a flush when the server has no FUA).
    pub fn write_fua(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check_writable()?;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.export.size)
        {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "write beyond the end of the NBD export ({} bytes)",
                    self.export.size
                ),
            )
            .with_path(&self.name));
        }
        let native_fua = fua && self.export.flags & TF_SEND_FUA != 0;
        let flags = if native_fua { CMDF_FUA } else { 0 };
        self.write_any(buf, offset, flags)?;
        if fua && !native_fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Trim (`NBD_CMD_TRIM`): a hint; the range may not read as zeros afterwards. Does nothing
    /// when the server has no trim.
    pub fn trim(&self, offset: u64, length: u64) -> Result<()> {
        self.check_writable()?;
        if self.export.flags & TF_SEND_TRIM == 0 {
            return Ok(());
        }
        let (offset, length) = self.inner_blocks(offset, length);
        let step = u32::MAX as u64 / 2 / 65536 * 65536;
        let mut p = 0;
        while p < length {
            let n = (length - p).min(step);
            self.call(CMD_TRIM, 0, offset + p, n as u32, &[])?;
            p += n;
        }
        Ok(())
    }

    /// Write zeroes only if the server can do it fast (`NBD_CMD_FLAG_FAST_ZERO`): `Ok(false)`
    /// when it cannot (no fast-zero support, or it answered ENOTSUP), so the caller writes zeros
    /// itself or skips pre-zeroing, as qemu-img convert does.
    pub fn write_zeroes_fast(&self, offset: u64, length: u64, may_unmap: bool) -> Result<bool> {
        self.check_writable()?;
        let need = TF_SEND_WRITE_ZEROES | TF_SEND_FAST_ZERO;
        if self.export.flags & need != need {
            return Ok(false);
        }
        let flags = CMDF_FAST_ZERO | if may_unmap { 0 } else { CMDF_NO_HOLE };
        match self.zero_any(offset, length, flags) {
            Ok(()) => Ok(true),
            Err(e) if e.code == ErrorCode::Unsupported => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn zero_requests(&self, offset: u64, length: u64, flags: u16) -> Result<()> {
        let step = u32::MAX as u64 / 2 / 65536 * 65536;
        let mut p = 0;
        while p < length {
            let n = (length - p).min(step);
            self.call(CMD_WRITE_ZEROES, flags, offset + p, n as u32, &[])?;
            p += n;
        }
        Ok(())
    }

    /// `qemu:allocation-depth` of the run at `offset`: (length, depth) where depth 0 means
    /// unallocated in the whole chain behind the export, 1 the top layer, and so on. `None`
    /// when the server does not offer the context.
    pub fn allocation_depth(&self, offset: u64, length: u64) -> Result<Option<(u64, u32)>> {
        match self.export.allocation_depth {
            Some(ctx) => self.block_status_any(ctx, offset, length),
            None => Ok(None),
        }
    }

    /// Close the connections now (`NBD_CMD_DISC`); later calls fail.
    pub fn close(&self) {
        self.conns.close();
    }

    /// Requests are split at the server's maximum (at most 8 MiB, which bounds the memory of
    /// the requests in flight), aligned down to its minimum block size.
    fn max_request(&self) -> u64 {
        let e = &self.export;
        let m = (e.max_block as u64).min(8 << 20).max(e.min_block as u64);
        (m / e.min_block as u64 * e.min_block as u64).max(512)
    }

    fn zero_range(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.check_writable()?;
        if self.export.flags & TF_SEND_WRITE_ZEROES == 0 {
            let z = vec![0u8; self.max_request().min(length) as usize];
            let mut p = 0;
            while p < length {
                let n = (length - p).min(z.len() as u64) as usize;
                self.write_at(&z[..n], offset + p)?;
                p += n as u64;
            }
            return Ok(());
        }
        self.zero_any(offset, length, if may_unmap { 0 } else { CMDF_NO_HOLE })
    }
}

impl Drop for NbdStorage {
    fn drop(&mut self) {
        // Also stops extra connections still negotiating (their threads hold the pool).
        self.conns.close();
    }
}

impl Storage for NbdStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.export.size;
        let inside = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[inside..].fill(0);
        self.read_any(&mut buf[..inside], offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_fua(buf, offset, self.write_through)
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_fua(buf, offset, true)
    }

    fn size(&self) -> Result<u64> {
        Ok(self.export.size)
    }

    fn truncate(&self, size: u64) -> Result<()> {
        if size == self.export.size {
            return Ok(());
        }
        Err(Error::unsupported("NBD exports cannot be resized").with_path(&self.name))
    }

    fn flush(&self) -> Result<()> {
        if self.read_only || self.export.flags & TF_SEND_FLUSH == 0 {
            return Ok(());
        }
        // Every write has had its reply before this is called; one flush would cover all
        // connections (multi-conn), but each gets one, as nbdcopy does.
        let mut tickets = Vec::new();
        for c in self.conns.all() {
            let p = reply::Pending::new(CMD_FLUSH, 0, 0);
            match c.submit(0, p, &[]) {
                Ok(t) => tickets.push(t),
                Err(e) => {
                    drop(tickets);
                    return Err(e.with_path(&self.name));
                }
            }
        }
        self.wait_all(tickets)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        // The contract is "reads as zeros afterwards"; NBD trim does not promise that.
        self.zero_range(offset, length, true)
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.zero_range(offset, length, may_unmap)
    }

    fn trim(&self, offset: u64, length: u64) -> Result<()> {
        NbdStorage::trim(self, offset, length)
    }

    fn make_zero_fast(&self) -> Result<bool> {
        if self.read_only {
            return Ok(false);
        }
        self.write_zeroes_fast(0, self.export.size, true)
    }

    fn allocate(&self, _offset: u64, _length: u64) -> Result<()> {
        Ok(())
    }

    fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.export.size)
    }

    fn data_run(&self, offset: u64, length: u64) -> Result<DataRun> {
        let (Some(ctx), true) = (self.export.base_allocation, length > 0) else {
            return Ok(DataRun {
                data: true,
                length: length.max(1),
            });
        };
        match self.block_status_any(ctx, offset, length)? {
            None => Ok(DataRun {
                data: false,
                length: length.max(1),
            }),
            Some((len, flags)) => Ok(DataRun {
                data: flags & STATE_HOLE == 0,
                length: len,
            }),
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
