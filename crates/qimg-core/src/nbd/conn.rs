//! Several NBD requests in flight on one connection. Callers (any thread) send a request under a
//! send lock, register it by cookie, and wait for it; one reader thread parses replies
//! ([`super::reply`]) and completes requests in whatever order the server answers them.
//!
//! A caller waits at most the connection's timeout: past it, or on any protocol or I/O error seen
//! by the reader, the connection is declared dead, its socket shut down, and every waiting and
//! later request fails with that error. At most [`MAX_IN_FLIGHT`] requests are outstanding, which
//! bounds the memory buffered for reads.
use super::reply::{self, Pending};
use super::transport::{Channel, ChannelReader};
use super::wire::*;
use crate::error::{Error, ErrorCode, Result};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most requests outstanding on one connection.
pub const MAX_IN_FLIGHT: usize = 16;

/// Most bytes of read buffers kept for reuse per connection.
pub const POOL_BYTES: usize = 32 << 20;

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
    /// Requests the reader has taken over (reply started).
    taken: HashMap<u64, Arc<Slot>>,
    /// Set once the connection is unusable.
    dead: Option<Error>,
    /// Requests outstanding.
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
    /// Read buffers to reuse (at most [`POOL_BYTES`] in all).
    bufs: Mutex<Vec<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fail every request registered or taken over, and mark the connection dead.
fn kill(sh: &mut Shared, e: Error) {
    if sh.dead.is_none() {
        sh.dead = Some(e.clone());
    }
    let e = sh.dead.clone().unwrap_or(e);
    for (_, (_, slot)) in sh.inbox.drain() {
        slot.complete(Err(e.clone()));
    }
    for (_, slot) in sh.taken.drain() {
        slot.complete(Err(e.clone()));
    }
}

impl Conn {
    /// Start the transmission phase on a negotiated channel.
    pub fn start(chan: Channel, structured: bool, timeout: Duration) -> Conn {
        let chan = Arc::new(chan);
        let shared: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let (c2, s2) = (chan.clone(), shared.clone());
        let reader = std::thread::Builder::new()
            .name("qimg-nbd-reader".into())
            .spawn(move || reader_loop(&c2, &s2, structured))
            .ok();
        let conn = Conn {
            chan,
            shared,
            send: Mutex::new(0),
            reader: Mutex::new(reader),
            timeout,
            bufs: Mutex::new(Vec::new()),
        };
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
        kill(&mut lock(m), e);
        cv.notify_all();
        self.chan.shutdown();
    }

    /// Send a request and wait for its reply. `data` is the payload of a write.
    pub fn call(
        &self,
        ty: u16,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> Result<Pending> {
        let what = reply::command_name(ty);
        let slot = Arc::new(Slot::default());
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
            sh.in_flight += 1;
        }
        let r = self.send_and_wait(ty, flags, offset, length, data, &slot, deadline);
        let (m, cv) = &*self.shared;
        lock(m).in_flight -= 1;
        cv.notify_one();
        r
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

    #[allow(clippy::too_many_arguments)]
    fn send_and_wait(
        &self,
        ty: u16,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
        slot: &Arc<Slot>,
        deadline: Instant,
    ) -> Result<Pending> {
        let what = reply::command_name(ty);
        {
            let mut cookie = lock(&self.send);
            *cookie = cookie.wrapping_add(1);
            let c = *cookie;
            {
                let mut sh = lock(&self.shared.0);
                if let Some(e) = &sh.dead {
                    return Err(e.clone());
                }
                let buf = if ty == CMD_READ {
                    lock(&self.bufs).pop().unwrap_or_default()
                } else {
                    Vec::new()
                };
                sh.inbox.insert(
                    c,
                    (Pending::with_buffer(ty, offset, length, buf), slot.clone()),
                );
            }
            let hdr = request(flags, ty, c, offset, length);
            let sent = self.chan.write_all(&hdr).and_then(|_| {
                if data.is_empty() {
                    Ok(())
                } else {
                    self.chan.write_all(data)
                }
            });
            if let Err(e) = sent {
                let err = Error::io(format!("NBD: sending {what}"), &e);
                self.fail(err.clone());
                return Err(err);
            }
        }
        let mut g = lock(&slot.done);
        loop {
            if let Some(r) = g.take() {
                return r.and_then(|p| match p.error {
                    Some(e) => Err(e),
                    None => Ok(p),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(g);
                let e = self.timed_out(what, offset);
                // The reader may have completed the slot meanwhile; the timeout wins anyway.
                return Err(e);
            }
            g = slot
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Give a read buffer back for later requests (the pool keeps at most [`POOL_BYTES`]).
    pub fn recycle(&self, buf: Vec<u8>) {
        let mut b = lock(&self.bufs);
        let held: usize = b.iter().map(Vec::capacity).sum();
        if buf.capacity() > 0 && held + buf.capacity() <= POOL_BYTES {
            b.push(buf);
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
            let _ = h.join();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

fn reader_loop(chan: &Channel, shared: &(Mutex<Shared>, Condvar), structured: bool) {
    let mut rd = ChannelReader(chan);
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
                let slot = lock(&shared.0).taken.remove(&cookie);
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
                kill(&mut sh, e);
                drop(sh);
                shared.1.notify_all();
                chan.shutdown();
                return;
            }
        }
    }
}
