//! Multi-conn: the connections of one [`super::NbdStorage`]. When the server advertises
//! `NBD_FLAG_CAN_MULTI_CONN`, further connections to the same export are opened in the
//! background (each negotiates on its own thread; the storage is usable on the first one at
//! once, and [`Pool::wait_ready`] waits briefly for the others) and requests go to the least
//! loaded connection. A connection whose negotiation fails or settles anything differently from
//! the first (size, flags, block sizes, context ids) is dropped: the storage goes on with fewer.
//! Without the flag, or with `connections` 1, there is one connection.
//!
//! Flush with multi-conn: the NBD protocol makes a flush on one connection cover every write
//! that completed (got its reply) on any connection before the flush was sent. Writes here are
//! always waited for before `flush` is called, so one flush would do; [`Pool::all`] lets the
//! storage send it on every connection anyway (as nbdcopy does), which also covers a server that
//! advertises the flag but flushes per connection.
use super::conn::Conn;
use super::handshake::Export;
use super::transport::Sock;
use super::{Address, ConnectOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Connections opened by default when the server allows several (as nbdcopy).
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Most connections one storage opens.
pub const MAX_CONNECTIONS: usize = 16;

/// How long opening a storage waits for its extra connections to finish negotiating (they
/// join later when slower).
pub const READY_WAIT: Duration = Duration::from_millis(500);

/// The open connections of a storage.
pub struct Pool {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Extra connections still negotiating.
    opening: Mutex<usize>,
    opened: Condvar,
    /// Sockets of extra connections, shut down on close (wakes a negotiation that hangs).
    socks: Mutex<Vec<Sock>>,
    closed: AtomicBool,
}

impl Pool {
    /// A pool of one connection.
    pub fn new(first: Arc<Conn>) -> Arc<Pool> {
        Arc::new(Pool {
            conns: Mutex::new(vec![first]),
            opening: Mutex::new(0),
            opened: Condvar::new(),
            socks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// The least loaded live connection (the first one when all are dead: its error is the
    /// one reported).
    pub fn pick(&self) -> Arc<Conn> {
        let g = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() == 1 {
            return g[0].clone();
        }
        let mut best: Option<(usize, &Arc<Conn>)> = None;
        for c in g.iter() {
            if c.is_dead() {
                continue;
            }
            let l = c.load();
            if best.is_none_or(|(b, _)| l < b) {
                best = Some((l, c));
            }
        }
        best.map(|(_, c)| c.clone()).unwrap_or_else(|| g[0].clone())
    }

    /// Every connection.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Open `n` more connections in the background, each checked against `first`.
    pub fn open_extra(
        self: &Arc<Self>,
        n: usize,
        addr: &Address,
        export: &str,
        o: &ConnectOptions,
        first: Export,
    ) {
        for _ in 0..n {
            *self.opening.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            let (pool, addr, export, o) =
                (self.clone(), addr.clone(), export.to_string(), o.clone());
            let spawned = std::thread::Builder::new()
                .name("qimg-nbd-connect".into())
                .spawn(move || {
                    let c = pool.connect_one(&addr, &export, &o, first);
                    if let Some(c) = c {
                        let mut g = pool.conns.lock().unwrap_or_else(|p| p.into_inner());
                        if pool.closed.load(Ordering::SeqCst) {
                            drop(g);
                            c.close();
                        } else {
                            g.push(c);
                        }
                    }
                    pool.done_opening();
                });
            if spawned.is_err() {
                self.done_opening();
            }
        }
    }

    fn done_opening(&self) {
        let mut g = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        *g -= 1;
        self.opened.notify_all();
    }

    fn connect_one(
        &self,
        addr: &Address,
        export: &str,
        o: &ConnectOptions,
        first: Export,
    ) -> Option<Arc<Conn>> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        let keep = |s: &Sock| {
            if let Ok(c) = s.try_clone() {
                self.socks.lock().unwrap_or_else(|p| p.into_inner()).push(c);
            }
        };
        let (stream, e) = super::negotiate_stream(addr, export, o, &keep).ok()?;
        // Context ids are per connection: requests must mean the same on every one.
        if e != first {
            return None;
        }
        super::start_conn(stream, e, o).ok()
    }

    /// Wait until the extra connections finished negotiating, at most `max` (opening a
    /// storage waits [`READY_WAIT`]).
    pub fn wait_ready(&self, max: Duration) {
        let deadline = Instant::now() + max;
        let mut g = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        while *g > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            g = self
                .opened
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Close every connection (and stop negotiations under way).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let conns = self.all();
        for c in conns {
            c.close();
        }
        for s in self
            .socks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            s.shutdown();
        }
    }
}
