//! Several NBD requests in flight on one connection. A caller (any thread) submits a request
//! under a send lock and gets a [`Ticket`]; it may submit more before waiting for any, so one
//! thread can keep many requests outstanding. One reader thread parses replies
//! ([`super::reply`]) and completes requests in whatever order the server answers them; read
//! data goes straight into the caller's memory when the request was submitted with one
//! ([`Pending::with_dest`]).
//!
//! A caller waits at most the connection's timeout: past it, or on any protocol or I/O error seen
//! by the reader, the connection is declared dead, its socket shut down, and every waiting and
//! later request fails with that error. A request whose reply the reader has started to parse is
//! completed only by the reader (which stops promptly once the socket is shut down), so memory a
//! read writes into is never released while the reader may still write to it; a [`Ticket`]
//! dropped without [`Ticket::wait`] waits for the same reason. At most [`MAX_IN_FLIGHT`] requests
//! are outstanding per connection.
use super::reply::{self, Pending};
use super::transport::{Channel, ChannelReader};
use super::wire::*;
use crate::error::{Error, ErrorCode, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most requests outstanding on one connection.
pub const MAX_IN_FLIGHT: usize = 16;

/// Bytes the reader thread buffers from the socket (reply headers and small chunks come in one
/// system call; larger payloads are read straight into their destination).
const READ_BUFFER: usize = 32 << 10;

/// Where a caller waits for its request.
#[derive(Default)]
struct Slot {
    done: Mutex<Option<Result<Pending>>>,
    cv: Condvar,
}

impl Slot {
    fn complete(&self, r: Result<Pending>) {
        if let Ok(mut g) = self.done.lock() {
            *g = Some(r);
        }
        self.cv.notify_all();
    }
}

/// State shared with the reader thread.
#[derive(Default)]
struct Shared {
    /// Sent requests the reader has not seen a reply for yet.
    inbox: HashMap<u64, (Pending, Arc<Slot>)>,
    /// Requests the reader has taken over (reply started): only the reader completes them.
    taken: HashMap<u64, Arc<Slot>>,
    /// Set once the connection is unusable.
    dead: Option<Error>,
    /// Requests submitted and not completed yet.
    in_flight: usize,
    /// The owner is closing the connection.
    closing: bool,
}

/// One connection in the transmission phase.
pub struct Conn {
    chan: Arc<Channel>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    /// Held while a request (header and data) is written; holds the last cookie used.
    send: Mutex<u64>,
    reader: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
    /// Requests sent over this connection so far.
    sent: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mark the connection dead and fail every request not under the reader's control (and, from
/// the reader itself, `taken` ones too).
fn kill(sh: &mut Shared, e: Error, with_taken: bool) {
    if sh.dead.is_none() {
        sh.dead = Some(e.clone());
    }
    let e = sh.dead.clone().unwrap_or(e);
    for (_, (_, slot)) in sh.inbox.drain() {
        sh.in_flight -= 1;
        slot.complete(Err(e.clone()));
    }
    if with_taken {
        for (_, slot) in sh.taken.drain() {
            sh.in_flight -= 1;
            slot.complete(Err(e.clone()));
        }
    }
}

/// A submitted request. [`Ticket::wait`] returns its reply; dropping the ticket waits too.
pub struct Ticket {
    conn: Arc<Conn>,
    slot: Option<Arc<Slot>>,
    what: &'static str,
    offset: u64,
    deadline: Instant,
}

impl Ticket {
    /// Wait for the reply (at most the connection's timeout): the request with its data, or the
    /// server's error for it, or the connection's.
    pub fn wait(mut self) -> Result<Pending> {
        let slot = self.slot.take().expect("waited once");
        self.conn
            .wait_slot(&slot, self.what, self.offset, self.deadline)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = self
                .conn
                .wait_slot(&slot, self.what, self.offset, self.deadline);
        }
    }
}

impl Conn {
    /// Start the transmission phase on a negotiated channel.
    pub fn start(chan: Channel, structured: bool, timeout: Duration) -> Arc<Conn> {
        let chan = Arc::new(chan);
        let shared: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let (c2, s2) = (chan.clone(), shared.clone());
        let reader = std::thread::Builder::new()
            .name("qimg-nbd-reader".into())
            .spawn(move || reader_loop(&c2, &s2, structured))
            .ok();
        let conn = Arc::new(Conn {
            chan,
            shared,
            send: Mutex::new(0),
            reader: Mutex::new(reader),
            timeout,
            sent: AtomicU64::new(0),
        });
        if lock(&conn.reader).is_none() {
            conn.fail(Error::new(
                ErrorCode::Internal,
                "could not start the NBD reader thread",
            ));
        }
        conn
    }

    /// Declare the connection dead with `e` and wake everyone.
    pub fn fail(&self, e: Error) {
        let (m, cv) = &*self.shared;
        kill(&mut lock(m), e, false);
        cv.notify_all();
        self.chan.shutdown();
    }

    /// Requests outstanding now.
    pub fn load(&self) -> usize {
        lock(&self.shared.0).in_flight
    }

    /// Requests sent over this connection so far.
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// True once the connection is unusable.
    pub fn is_dead(&self) -> bool {
        lock(&self.shared.0).dead.is_some()
    }

    /// Send a request and wait for its reply. `data` is the payload of a write.
    pub fn call(
        self: &Arc<Self>,
        ty: u16,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> Result<Pending> {
        self.submit(flags, Pending::new(ty, offset, length), data)?
            .wait()
    }

    /// Send request `p` (with `flags`, and `data` as a write's payload) without waiting for its
    /// reply; waits while [`MAX_IN_FLIGHT`] requests are outstanding.
    pub fn submit(self: &Arc<Self>, flags: u16, p: Pending, data: &[u8]) -> Result<Ticket> {
        let (ty, offset, length) = (p.ty, p.offset, p.length);
        let what = reply::command_name(ty);
        let deadline = Instant::now() + self.timeout;
        {
            let (m, cv) = &*self.shared;
            let mut sh = lock(m);
            while sh.dead.is_none() && sh.in_flight >= MAX_IN_FLIGHT {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(sh);
                    return Err(self.timed_out(what, offset));
                }
                sh = cv
                    .wait_timeout(sh, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if let Some(e) = &sh.dead {
                return Err(e.clone());
            }
        }
        let slot = Arc::new(Slot::default());
        let mut cookie = lock(&self.send);
        *cookie = cookie.wrapping_add(1);
        let c = *cookie;
        {
            let mut sh = lock(&self.shared.0);
            if let Some(e) = &sh.dead {
                return Err(e.clone());
            }
            sh.in_flight += 1;
            sh.inbox.insert(c, (p, slot.clone()));
        }
        let ticket = Ticket {
            conn: self.clone(),
            slot: Some(slot),
            what,
            offset,
            deadline,
        };
        let hdr = request(flags, ty, c, offset, length);
        let sent = self.chan.write_all(&hdr).and_then(|_| {
            if data.is_empty() {
                Ok(())
            } else {
                self.chan.write_all(data)
            }
        });
        drop(cookie);
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sent {
            let err = Error::io(format!("NBD: sending {what}"), &e);
            self.fail(err.clone());
            // The ticket's drop waits until the request is out of the reader's hands.
            drop(ticket);
            return Err(err);
        }
        Ok(ticket)
    }

    fn timed_out(&self, what: &str, offset: u64) -> Error {
        let e = Error::new(
            ErrorCode::Io,
            format!(
                "NBD server did not answer a {what} within {} s",
                self.timeout.as_secs_f64()
            ),
        )
        .with_offset(offset);
        self.fail(e.clone());
        e
    }

    /// Wait for `slot` until `deadline`; past it the connection is failed, and the wait goes
    /// on (without a deadline) until the reader has let go of the request.
    fn wait_slot(
        &self,
        slot: &Slot,
        what: &str,
        offset: u64,
        deadline: Instant,
    ) -> Result<Pending> {
        let mut g = lock(&slot.done);
        let mut timeout: Option<Error> = None;
        loop {
            if let Some(r) = g.take() {
                if let Some(e) = timeout {
                    return Err(e);
                }
                return r.and_then(|p| match p.error {
                    Some(e) => Err(e),
                    None => Ok(p),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && timeout.is_none() {
                drop(g);
                timeout = Some(self.timed_out(what, offset));
                g = lock(&slot.done);
                continue;
            }
            // After the timeout: the reader stops promptly (its socket is shut down).
            let step = if timeout.is_some() {
                Duration::from_millis(100)
            } else {
                left
            };
            g = slot
                .cv
                .wait_timeout(g, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Send `NBD_CMD_DISC`, shut the socket down and stop the reader.
    pub fn close(&self) {
        {
            let _s = lock(&self.send);
            let mut sh = lock(&self.shared.0);
            sh.closing = true;
            if sh.dead.is_none() {
                drop(sh);
                let _ = self.chan.write_all(&request(0, CMD_DISC, 0, 0, 0));
            }
        }
        self.fail(Error::new(ErrorCode::Io, "NBD connection closed"));
        if let Some(h) = lock(&self.reader).take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Fails every request still in the reader's hands when the reader stops, even by a panic.
struct ReaderExit<'a>(&'a (Mutex<Shared>, Condvar), &'a Channel);

impl Drop for ReaderExit<'_> {
    fn drop(&mut self) {
        let mut sh = lock(&self.0 .0);
        let e = sh
            .dead
            .clone()
            .unwrap_or_else(|| Error::new(ErrorCode::Io, "NBD connection closed"));
        kill(&mut sh, e, true);
        drop(sh);
        self.0 .1.notify_all();
        self.1.shutdown();
    }
}

fn reader_loop(chan: &Channel, shared: &(Mutex<Shared>, Condvar), structured: bool) {
    let _exit = ReaderExit(shared, chan);
    let mut rd = std::io::BufReader::with_capacity(READ_BUFFER, ChannelReader(chan));
    let mut local: HashMap<u64, Pending> = HashMap::new();
    loop {
        let r = {
            let mut fetch = |cookie: u64| {
                let mut sh = lock(&shared.0);
                let (p, slot) = sh.inbox.remove(&cookie)?;
                sh.taken.insert(cookie, slot);
                Some(p)
            };
            reply::read_message(&mut rd, &mut local, &mut fetch, structured)
        };
        match r {
            Ok(Some((cookie, p))) => {
                let slot = {
                    let mut sh = lock(&shared.0);
                    let s = sh.taken.remove(&cookie);
                    if s.is_some() {
                        sh.in_flight -= 1;
                    }
                    s
                };
                shared.1.notify_one();
                if let Some(slot) = slot {
                    slot.complete(Ok(p));
                }
            }
            Ok(None) => {}
            Err(e) => {
                let mut sh = lock(&shared.0);
                let e = if sh.closing {
                    Error::new(ErrorCode::Io, "NBD connection closed")
                } else {
                    e
                };
                // Nothing of `local` is written to any more: its requests may complete.
                kill(&mut sh, e, true);
                return;
            }
        }
    }
}
