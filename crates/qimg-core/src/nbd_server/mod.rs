//! The NBD server (qemu-nbd's role): exports one opened image — any format, any backing chain —
//! over TCP or a Unix socket.
//!
//! [`NbdServer::start`] binds, then runs an accept thread; every client gets its own thread for
//! the fixed-newstyle negotiation ([`handshake`]) and, in the transmission phase
//! ([`transmission`]), a reader that parses requests plus a few workers that run them against the
//! driver, so several requests are in flight per connection. Nothing here runs on the JavaScript
//! thread: the N-API layer only starts, waits for and stops a server.
//!
//! With TLS credentials every client must upgrade with `NBD_OPT_STARTTLS` before anything else
//! (qemu-nbd's `--tls-creds`); the TLS layer is the client's ([`crate::nbd::tls`],
//! [`crate::nbd::transport`]).
//!
//! Safety against hostile clients: every length is bounded before anything is allocated (options
//! 64 KiB, names 4 KiB, READ/WRITE 32 MiB like qemu-nbd, at most 16 requests and 64 MiB of
//! payload in flight per connection), the negotiation has a time limit, and a malformed request
//! ends that connection only.
//!
//! Lifetime: without `persistent` the server stops once its last client has gone (as qemu-nbd);
//! [`NbdServer::close`] stops it at any time. Stopping disconnects the clients, waits for their
//! in-flight requests and flushes the image; the caller then closes the image (releasing its locks).
pub mod handshake;
pub mod proto;
pub mod transmission;

use crate::driver::BlockDriver;
use crate::error::{Error, Result};
use crate::nbd::tls::TlsCreds;
use crate::nbd::transport::Sock;
use openssl::ssl::SslAcceptor;
use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP on `host:port` (port 0: chosen by the OS, see [`NbdServer::port`]).
    Tcp(String, u16),
    /// A Unix socket path (an old socket file there is replaced, as QEMU does).
    Unix(String),
}

/// How an export is served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Export name (`-x`; qemu-nbd's default is "").
    pub export_name: String,
    /// Export description (`-D`), sent with LIST and INFO.
    pub description: Option<String>,
    /// Refuse writes (`-r`).
    pub read_only: bool,
    /// Clients served at once (`--shared`; 0 = no limit). Further clients wait in the backlog.
    pub shared: u32,
    /// Keep serving after the last client leaves (`--persistent`).
    pub persistent: bool,
    /// Require TLS with these credentials (`--tls-creds`; a server endpoint's).
    pub tls: Option<TlsCreds>,
    /// Offer the `qemu:allocation-depth` metadata context (`-A`).
    pub allocation_depth: bool,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> std::io::Result<Sock> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                s.set_nodelay(true).ok();
                Sock::Tcp(s)
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Sock::Unix(s)
            }
        })
    }
}

/// What the export looks like to every connection.
pub(crate) struct Export {
    pub driver: Arc<dyn BlockDriver>,
    pub config: ServerConfig,
    pub size: u64,
    /// The format's allocation unit, for deciding whether a zeroing is fast.
    pub cluster: u64,
    /// The TLS server context when TLS is required.
    pub tls: Option<SslAcceptor>,
}

#[derive(Default)]
struct State {
    active: u32,
    had_client: bool,
    next_id: u64,
    conns: HashMap<u64, Sock>,
    finished: bool,
    error: Option<Error>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running NBD server.
pub struct NbdServer {
    shared: Arc<Shared>,
    port: Option<u16>,
    socket_path: Option<String>,
    accept: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("port", &self.port)
            .field("socket_path", &self.socket_path)
            .finish()
    }
}

impl NbdServer {
    /// Bind `listen` and start serving `driver` (already opened, with its locks held).
    pub fn start(
        driver: Arc<dyn BlockDriver>,
        listen: &Listen,
        config: ServerConfig,
    ) -> Result<NbdServer> {
        if config.export_name.len() > proto::MAX_STRING as usize {
            return Err(Error::invalid(
                "Export name is too long (at most 4096 bytes)",
            ));
        }
        if config.description.as_ref().map_or(0, |d| d.len()) > proto::MAX_STRING as usize {
            return Err(Error::invalid(
                "Description is too long (at most 4096 bytes)",
            ));
        }
        let tls = match &config.tls {
            Some(c) => Some(c.acceptor()?),
            None => None,
        };
        let (listener, port, socket_path) = match listen {
            Listen::Tcp(host, port) => {
                let l = TcpListener::bind((host.as_str(), *port)).map_err(|e| {
                    Error::io(format!("Failed to bind socket to {host}:{port}"), &e)
                })?;
                let p = l.local_addr().map(|a| a.port()).unwrap_or(*port);
                (Listener::Tcp(l), Some(p), None)
            }
            Listen::Unix(path) => {
                if let Ok(m) = std::fs::symlink_metadata(path) {
                    if m.file_type().is_socket() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                let l = UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("Failed to bind socket to {path}"), &e))?;
                (Listener::Unix(l), None, Some(path.clone()))
            }
        };
        let cluster = driver
            .info()
            .ok()
            .and_then(|i| i.cluster_size)
            .unwrap_or(4096)
            .max(1);
        // Owned by the accept thread and lent to each connection; the last holder drops it as the
        // server finishes, so the image's file (and its locks) goes with the caller's close.
        let export = Arc::new(Export {
            size: driver.virtual_size(),
            driver,
            config,
            cluster,
            tls,
        });
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let sh = shared.clone();
        let sp = socket_path.clone();
        let accept = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(sh, export, listener, sp))
            .map_err(|e| Error::io("Failed to start the NBD server thread", &e))?;
        Ok(NbdServer {
            shared,
            port,
            socket_path,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The TCP port listened on (the OS's choice when 0 was asked).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The Unix socket path listened on.
    pub fn socket_path(&self) -> Option<&str> {
        self.socket_path.as_deref()
    }

    /// Clients connected right now.
    pub fn connections(&self) -> u32 {
        self.shared.lock().active
    }

    /// True once the server has stopped (closed, or its last client left without `persistent`).
    pub fn finished(&self) -> bool {
        self.shared.lock().finished
    }

    /// Block until the server has stopped; returns the final flush's outcome. By then the server
    /// holds no reference to the driver any more.
    pub fn wait(&self) -> Result<()> {
        let mut st = self.shared.lock();
        while !st.finished {
            st = self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        match &st.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Stop: no new clients, disconnect the current ones after their in-flight requests, flush.
    pub fn close(&self) -> Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cv.notify_all();
        let h = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
        self.wait()
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Wait until `fd` is readable or `ms` passed.
fn poll_readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is a valid, initialised pollfd that lives for the whole call; nfds is 1.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && (p.revents & libc::POLLIN) != 0
}

fn accept_loop(sh: Arc<Shared>, ex: Arc<Export>, listener: Listener, socket_path: Option<String>) {
    let limit = ex.config.shared;
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        {
            let st = sh.lock();
            if !ex.config.persistent && st.had_client && st.active == 0 {
                break;
            }
            if limit > 0 && st.active >= limit {
                let _ = sh.cv.wait_timeout(st, Duration::from_millis(100));
                continue;
            }
        }
        if !poll_readable(listener.fd(), 100) {
            continue;
        }
        let sock = match listener.accept() {
            Ok(s) => s,
            Err(_) => continue,
        };
        let id = {
            let mut st = sh.lock();
            st.active += 1;
            st.had_client = true;
            st.next_id += 1;
            let id = st.next_id;
            if let Ok(c) = sock.try_clone() {
                st.conns.insert(id, c);
            }
            id
        };
        let sh2 = sh.clone();
        let ex2 = ex.clone();
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serve_client(&sh2, &ex2, sock)
                }));
                // Let go of the image before this connection counts as gone.
                drop(ex2);
                let mut st = sh2.lock();
                if let Some(s) = st.conns.remove(&id) {
                    s.shutdown();
                }
                st.active -= 1;
                sh2.cv.notify_all();
            });
        if spawned.is_err() {
            let mut st = sh.lock();
            if let Some(s) = st.conns.remove(&id) {
                s.shutdown();
            }
            st.active -= 1;
        }
    }
    drop(listener);
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    // Disconnect whoever is left, let their requests finish, then flush.
    let mut st = sh.lock();
    for s in st.conns.values() {
        s.shutdown();
    }
    while st.active > 0 {
        st = sh.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    drop(st);
    let r = ex.driver.flush();
    drop(ex);
    let mut st = sh.lock();
    st.error = r.err();
    st.finished = true;
    sh.cv.notify_all();
}

fn serve_client(sh: &Shared, ex: &Export, sock: Sock) {
    sock.set_timeouts(Some(handshake::HANDSHAKE_LIMIT));
    let Ok(Some((stream, neg))) = handshake::negotiate(sock, ex) else {
        return;
    };
    if sh.stop.load(Ordering::SeqCst) {
        return;
    }
    transmission::run(stream, ex, neg);
}
