//! The byte stream under an NBD connection: a TCP or Unix socket, optionally wrapped in TLS,
//! shared by the threads that send requests and the one reader thread that takes replies.
//!
//! A plain socket is read and written through shared references (the kernel serialises each
//! call; senders hold their own lock so requests never interleave). A TLS session is one OpenSSL
//! object: it is switched to non-blocking mode once negotiation is over, every call on it is
//! made under a mutex, and a caller that must wait for the socket drops the mutex and `poll`s,
//! so a reader blocked on a slow reply never blocks senders.
use crate::error::{Error, Result};
use openssl::ssl::{ErrorCode as SslCode, SslStream};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A connected socket.
#[derive(Debug)]
pub enum Sock {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
}

impl Sock {
    /// Connect to `addr`, with `timeout` for connecting (TCP) and for every blocking read and
    /// write while negotiating.
    pub fn connect(addr: &super::Address, timeout: Duration) -> Result<Sock> {
        let s = match addr {
            super::Address::Tcp(host, port) => {
                use std::net::ToSocketAddrs;
                let what = format!("Failed to connect to '{host}:{port}'");
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| Error::io(&what, &e))?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut found = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(t) => {
                            found = Some(t);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let t = found.ok_or_else(|| Error::io(&what, &last))?;
                t.set_nodelay(true).ok();
                Sock::Tcp(t)
            }
            super::Address::Unix(path) => Sock::Unix(
                UnixStream::connect(path)
                    .map_err(|e| Error::io(format!("Failed to connect to '{path}'"), &e))?,
            ),
        };
        s.set_timeouts(Some(timeout));
        Ok(s)
    }

    /// Set (or clear) the read and write timeouts.
    pub fn set_timeouts(&self, t: Option<Duration>) {
        match self {
            Sock::Tcp(s) => {
                s.set_read_timeout(t).ok();
                s.set_write_timeout(t).ok();
            }
            Sock::Unix(s) => {
                s.set_read_timeout(t).ok();
                s.set_write_timeout(t).ok();
            }
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(on),
            Sock::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Another handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    /// Shut both directions down: wakes any thread blocked on the socket.
    pub fn shutdown(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Wait until `fd` is readable (`POLLIN`) or writable (`POLLOUT`), at most `ms` milliseconds.
fn wait_fd(fd: RawFd, events: libc::c_short, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is a valid pollfd for the duration of the call and nfds is 1.
    unsafe {
        libc::poll(&mut p, 1, ms);
    }
}

/// The transmission-phase stream, shareable between threads.
pub enum Channel {
    /// A plain socket.
    Plain(Sock),
    /// A TLS session (non-blocking socket under a mutex) and a handle for shutting it down.
    Tls {
        /// The session.
        ssl: Mutex<SslStream<Sock>>,
        /// The socket's descriptor, for `poll`.
        fd: RawFd,
        /// A second handle on the socket, for shutdown.
        shut: Sock,
        /// Longest wait for the socket to become writable.
        timeout: Duration,
    },
}

impl Channel {
    /// A plain channel: blocking reads (the reader thread waits for replies indefinitely; the
    /// callers' own deadlines shut the socket down), writes bounded by `timeout`.
    pub fn plain(s: Sock, timeout: Duration) -> Channel {
        match &s {
            Sock::Tcp(t) => {
                t.set_read_timeout(None).ok();
                t.set_write_timeout(Some(timeout)).ok();
            }
            Sock::Unix(u) => {
                u.set_read_timeout(None).ok();
                u.set_write_timeout(Some(timeout)).ok();
            }
        }
        Channel::Plain(s)
    }

    /// A TLS channel over a negotiated session.
    pub fn tls(ssl: SslStream<Sock>, timeout: Duration) -> Result<Channel> {
        let shut = ssl
            .get_ref()
            .try_clone()
            .map_err(|e| Error::io("NBD: duplicating the socket", &e))?;
        ssl.get_ref()
            .set_nonblocking(true)
            .map_err(|e| Error::io("NBD: making the socket non-blocking", &e))?;
        let fd = ssl.get_ref().as_raw_fd();
        Ok(Channel::Tls {
            ssl: Mutex::new(ssl),
            fd,
            shut,
            timeout,
        })
    }

    fn ssl_error(e: openssl::ssl::Error) -> io::Error {
        if e.code() == SslCode::SYSCALL && e.io_error().is_none() {
            return io::Error::new(io::ErrorKind::UnexpectedEof, "TLS session ended");
        }
        match e.into_io_error() {
            Ok(ioe) => ioe,
            Err(e) => io::Error::other(format!("TLS: {e}")),
        }
    }

    /// Read some bytes (0 at the end of the stream).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(Sock::Tcp(s)) => (&*s).read(buf),
            Channel::Plain(Sock::Unix(s)) => (&*s).read(buf),
            Channel::Tls { ssl, fd, .. } => loop {
                let r = {
                    let mut g = ssl
                        .lock()
                        .map_err(|_| io::Error::other("TLS session lock poisoned"))?;
                    g.ssl_read(buf)
                };
                match r {
                    Ok(n) => return Ok(n),
                    Err(e) if e.code() == SslCode::ZERO_RETURN => return Ok(0),
                    Err(e) if e.code() == SslCode::WANT_READ => wait_fd(*fd, libc::POLLIN, 1000),
                    Err(e) if e.code() == SslCode::WANT_WRITE => wait_fd(*fd, libc::POLLOUT, 1000),
                    Err(e) => return Err(Self::ssl_error(e)),
                }
            },
        }
    }

    /// Write all of `buf`.
    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        match self {
            Channel::Plain(Sock::Tcp(s)) => (&*s).write_all(buf),
            Channel::Plain(Sock::Unix(s)) => (&*s).write_all(buf),
            Channel::Tls {
                ssl, fd, timeout, ..
            } => {
                let t0 = Instant::now();
                while !buf.is_empty() {
                    let r = {
                        let mut g = ssl
                            .lock()
                            .map_err(|_| io::Error::other("TLS session lock poisoned"))?;
                        g.ssl_write(buf)
                    };
                    match r {
                        Ok(n) => buf = &buf[n..],
                        Err(e)
                            if e.code() == SslCode::WANT_WRITE
                                || e.code() == SslCode::WANT_READ =>
                        {
                            if t0.elapsed() > *timeout {
                                return Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "timed out sending a request",
                                ));
                            }
                            let ev = if e.code() == SslCode::WANT_WRITE {
                                libc::POLLOUT
                            } else {
                                libc::POLLIN
                            };
                            wait_fd(*fd, ev, 100);
                        }
                        Err(e) => return Err(Self::ssl_error(e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Shut the socket down (wakes the reader thread).
    pub fn shutdown(&self) {
        match self {
            Channel::Plain(s) => s.shutdown(),
            Channel::Tls { shut, .. } => shut.shutdown(),
        }
    }
}

/// `Read` over a shared channel (for the reply parser).
pub struct ChannelReader<'a>(pub &'a Channel);

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
