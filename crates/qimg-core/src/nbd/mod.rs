//! The `nbd` protocol node: a [`Storage`] over an NBD export (QEMU's NBD client role), so every
//! format driver works over NBD (`qcow2` over `nbd://…`, raw over `nbd+unix://…`).
//!
//! [`handshake`] negotiates (fixed newstyle, structured replies, `base:allocation`, `OPT_GO`);
//! this module runs the transmission phase: requests split at the server's maximum block size,
//! simple or structured replies (data, holes, errors, block status), flush, write zeroes
//! (`NO_HOLE` unless unmapping is allowed) and discard-as-zeroes. One request is on the wire at a
//! time per connection; every reply is bounded before it is buffered, a server that stops
//! answering hits the I/O timeout, and a malformed or out-of-range reply is an error, never data.
pub mod handshake;
pub mod wire;

use crate::error::{Error, ErrorCode, Result};
use crate::storage::{DataRun, Storage};
use handshake::Export;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;
use wire::*;

/// Where the NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port` over TCP.
    Tcp(String, u16),
    /// A Unix socket path.
    Unix(String),
}

/// A byte stream to the server.
trait Stream: Read + Write + Send {}
impl Stream for TcpStream {}
impl Stream for UnixStream {}

struct Conn {
    s: Box<dyn Stream>,
    cookie: u64,
}

/// An NBD export as a byte store.
pub struct NbdStorage {
    name: String,
    export: Export,
    read_only: bool,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for NbdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdStorage")
            .field("name", &self.name)
            .field("export", &self.export)
            .finish()
    }
}

/// How long a request may wait for its reply.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

impl NbdStorage {
    /// Connect to `addr`, negotiate `export`, and open it (read-only when asked, or when the
    /// server says so and writes are not needed).
    pub fn connect(addr: &Address, export: &str, read_only: bool, name: &str) -> Result<Self> {
        let s: Box<dyn Stream> = match addr {
            Address::Tcp(host, port) => {
                let t = TcpStream::connect((host.as_str(), *port))
                    .map_err(|e| Error::io(format!("Failed to connect to '{host}:{port}'"), &e))?;
                t.set_nodelay(true).ok();
                t.set_read_timeout(Some(IO_TIMEOUT)).ok();
                t.set_write_timeout(Some(IO_TIMEOUT)).ok();
                Box::new(t)
            }
            Address::Unix(path) => {
                let u = UnixStream::connect(path)
                    .map_err(|e| Error::io(format!("Failed to connect to '{path}'"), &e))?;
                u.set_read_timeout(Some(IO_TIMEOUT)).ok();
                u.set_write_timeout(Some(IO_TIMEOUT)).ok();
                Box::new(u)
            }
        };
        let mut conn = Conn { s, cookie: 0 };
        let export_info =
            handshake::negotiate(&mut conn.s, export).map_err(|e| e.with_path(name))?;
        if !read_only && export_info.flags & TF_READ_ONLY != 0 {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                "NBD export is read-only but a writable open was requested",
            )
            .with_path(name));
        }
        Ok(NbdStorage {
            name: name.to_string(),
            export: export_info,
            read_only,
            conn: Mutex::new(conn),
        })
    }

    /// What negotiation settled (size, flags, block sizes, contexts).
    pub fn export(&self) -> Export {
        self.export
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Conn>> {
        self.conn
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "NBD connection lock poisoned"))
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

    /// Send one request (with `data` for writes) and read its whole reply. For reads, `out`
    /// receives the data (holes as zeros); for block status, the first descriptor is returned.
    fn transact(
        &self,
        ty: u16,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<Option<(u32, u32)>> {
        let mut c = self.conn()?;
        c.cookie = c.cookie.wrapping_add(1);
        let cookie = c.cookie;
        let what = match ty {
            CMD_READ => "read",
            CMD_WRITE => "write",
            CMD_FLUSH => "flush",
            CMD_WRITE_ZEROES => "write zeroes",
            CMD_BLOCK_STATUS => "block status",
            _ => "request",
        };
        let hdr = request(flags, ty, cookie, offset, length);
        c.s.write_all(&hdr)
            .and_then(|_| c.s.write_all(data))
            .map_err(|e| Error::io(format!("NBD: sending {what}"), &e))?;
        if let Some(o) = out.as_deref_mut() {
            o.fill(0);
        }
        let mut status = None;
        let mut failure: Option<Error> = None;
        loop {
            let mut m = [0u8; 4];
            read_exact(&mut c.s, &mut m, "a reply")?;
            match be32(&m, 0) {
                SIMPLE_MAGIC => {
                    let mut h = [0u8; 12];
                    read_exact(&mut c.s, &mut h, "a reply")?;
                    if be64(&h, 4) != cookie {
                        return Err(Error::corrupt("NBD reply for an unknown request"));
                    }
                    let err = be32(&h, 0);
                    if err != 0 {
                        return Err(errno_error(err, what, "").with_offset(offset));
                    }
                    if ty == CMD_READ {
                        let o = out
                            .as_deref_mut()
                            .ok_or_else(|| Error::corrupt("read buffer"))?;
                        read_exact(&mut c.s, o, "read data")?;
                    }
                    return Ok(status);
                }
                STRUCTURED_MAGIC => {
                    let mut h = [0u8; 16];
                    read_exact(&mut c.s, &mut h, "a reply chunk")?;
                    let (cflags, cty, ccookie, len) =
                        (be16(&h, 0), be16(&h, 2), be64(&h, 4), be32(&h, 12));
                    if ccookie != cookie {
                        return Err(Error::corrupt("NBD reply chunk for an unknown request"));
                    }
                    let limit = if cty == REPLY_OFFSET_DATA {
                        length.saturating_add(8)
                    } else {
                        MAX_PAYLOAD
                    };
                    if len > limit {
                        return Err(Error::corrupt(format!(
                            "NBD reply chunk of {len} bytes is too large"
                        )));
                    }
                    match cty {
                        REPLY_OFFSET_DATA if ty == CMD_READ && len >= 8 => {
                            let mut ob = [0u8; 8];
                            read_exact(&mut c.s, &mut ob, "read data")?;
                            let at = be64(&ob, 0);
                            let n = (len - 8) as u64;
                            let o = out
                                .as_deref_mut()
                                .ok_or_else(|| Error::corrupt("read buffer"))?;
                            if at < offset || at + n > offset + o.len() as u64 {
                                return Err(Error::corrupt(
                                    "NBD read data chunk outside the request",
                                ));
                            }
                            let s = (at - offset) as usize;
                            read_exact(&mut c.s, &mut o[s..s + n as usize], "read data")?;
                        }
                        _ => {
                            let mut p = vec![0u8; len as usize];
                            read_exact(&mut c.s, &mut p, "a reply chunk")?;
                            match cty {
                                REPLY_NONE => {}
                                REPLY_OFFSET_HOLE if ty == CMD_READ && p.len() == 12 => {
                                    let (at, n) = (be64(&p, 0), be32(&p, 8) as u64);
                                    let o = out
                                        .as_deref_mut()
                                        .ok_or_else(|| Error::corrupt("read buffer"))?;
                                    if at < offset || at + n > offset + o.len() as u64 {
                                        return Err(Error::corrupt(
                                            "NBD hole chunk outside the request",
                                        ));
                                    }
                                    // Already zero-filled.
                                }
                                REPLY_BLOCK_STATUS if p.len() >= 12 => {
                                    status = Some((be32(&p, 4), be32(&p, 8)));
                                }
                                t if t & REPLY_TYPE_ERROR_BIT != 0 && p.len() >= 6 => {
                                    let err = be32(&p, 0);
                                    let ml = (be16(&p, 4) as usize).min(p.len() - 6);
                                    let msg = String::from_utf8_lossy(&p[6..6 + ml]);
                                    failure.get_or_insert(
                                        errno_error(err, what, &msg).with_offset(offset),
                                    );
                                }
                                t => {
                                    return Err(Error::corrupt(format!(
                                        "NBD server sent an unexpected reply chunk (type {t})"
                                    )))
                                }
                            }
                        }
                    }
                    if cflags & REPLY_FLAG_DONE != 0 {
                        return match failure {
                            Some(e) => Err(e.with_path(&self.name)),
                            None => Ok(status),
                        };
                    }
                }
                _ => return Err(Error::corrupt("NBD server sent a reply with a bad magic")),
            }
        }
    }

    /// Requests are split at the server's maximum, aligned down to its minimum block size.
    fn max_request(&self) -> u64 {
        let e = &self.export;
        let m = (e.max_block as u64).max(e.min_block as u64);
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
        let flags = if may_unmap { 0 } else { CMDF_NO_HOLE };
        let step = u32::MAX as u64 / 2 / 65536 * 65536;
        let mut p = 0;
        while p < length {
            let n = (length - p).min(step);
            self.transact(CMD_WRITE_ZEROES, flags, offset + p, n as u32, &[], None)?;
            p += n;
        }
        Ok(())
    }
}

impl Drop for NbdStorage {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conn.lock() {
            let hdr = request(0, CMD_DISC, 0, 0, 0);
            let _ = c.s.write_all(&hdr);
        }
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
        let step = self.max_request() as usize;
        let mut done = 0;
        while done < inside {
            let n = (inside - done).min(step);
            let at = offset + done as u64;
            self.transact(
                CMD_READ,
                0,
                at,
                n as u32,
                &[],
                Some(&mut buf[done..done + n]),
            )?;
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        if offset + buf.len() as u64 > self.export.size {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "write beyond the end of the NBD export ({} bytes)",
                    self.export.size
                ),
            )
            .with_path(&self.name));
        }
        let step = self.max_request() as usize;
        for (i, part) in buf.chunks(step).enumerate() {
            let at = offset + (i * step) as u64;
            self.transact(CMD_WRITE, 0, at, part.len() as u32, part, None)?;
        }
        Ok(())
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
        self.transact(CMD_FLUSH, 0, 0, 0, &[], None).map(|_| ())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        // The contract is "reads as zeros afterwards"; NBD trim does not promise that.
        self.zero_range(offset, length, true)
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.zero_range(offset, length, may_unmap)
    }

    fn allocate(&self, _offset: u64, _length: u64) -> Result<()> {
        Ok(())
    }

    fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.export.size)
    }

    fn data_run(&self, offset: u64, length: u64) -> Result<DataRun> {
        let (Some(_), true) = (self.export.base_allocation, length > 0) else {
            return Ok(DataRun {
                data: true,
                length: length.max(1),
            });
        };
        let n = length
            .min(self.export.size.saturating_sub(offset))
            .min(1 << 30);
        if n == 0 {
            return Ok(DataRun {
                data: false,
                length: length.max(1),
            });
        }
        let d = self.transact(CMD_BLOCK_STATUS, CMDF_REQ_ONE, offset, n as u32, &[], None)?;
        match d {
            Some((len, flags)) if len > 0 => Ok(DataRun {
                data: flags & STATE_HOLE == 0,
                length: (len as u64).min(n),
            }),
            _ => Err(
                Error::corrupt("NBD block status reply without a descriptor").with_path(&self.name),
            ),
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
