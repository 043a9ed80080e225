//! The transmission-phase reply parser: one simple reply or one structured chunk per call,
//! applied to the request it answers (found by cookie). It never allocates from a length the
//! server sent (read buffers are sized by the request; chunk payloads are bounded by
//! [`MAX_PAYLOAD`]), rejects data outside the request, and refuses a read reply that leaves part
//! of the request uncovered, so a broken server yields an error, never zeros.
//!
//! ```text
//! simple reply   u32 SIMPLE_MAGIC, u32 error, u64 cookie, [length bytes for a good READ]
//! chunk          u32 STRUCTURED_MAGIC, u16 flags, u16 type, u64 cookie, u32 length, payload
//!   OFFSET_DATA    u64 offset, data
//!   OFFSET_HOLE    u64 offset, u32 length
//!   BLOCK_STATUS   u32 context id, { u32 length, u32 flags }*
//!   ERROR          u32 errno, u16 message length, message
//!   ERROR_OFFSET   u32 errno, u16 message length, message, u64 offset
//! ```
use super::wire::*;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;

/// Most block status descriptors kept for one request.
const MAX_DESCRIPTORS: usize = 1 << 20;

/// A caller's memory a read reply is written into directly (no intermediate buffer).
#[derive(Debug, Clone, Copy)]
pub struct RawDest {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a `RawDest` is only dereferenced by the connection's reader thread while the request
// is outstanding; its creator (see [`Pending::with_dest`]) keeps the memory alive and untouched
// until the request completes, so moving the pointer to that thread is sound.
unsafe impl Send for RawDest {}

/// A request waiting for (the rest of) its reply.
#[derive(Debug)]
pub struct Pending {
    /// Command (`CMD_*`).
    pub ty: u16,
    /// Request offset.
    pub offset: u64,
    /// Request length.
    pub length: u32,
    /// Read data (`length` bytes); empty for other commands and for reads into a caller's memory ([`Self::with_dest`]).
    pub data: Vec<u8>,
    /// Where read data goes instead of `data`, when set.
    dest: Option<RawDest>,
    /// Bytes of a read covered by data or hole chunks so far.
    pub covered: u64,
    /// Block status descriptors: (context id, length, flags).
    pub status: Vec<(u32, u32, u32)>,
    /// The first error the server reported for the request.
    pub error: Option<Error>,
}

impl Pending {
    /// A new pending request (read buffers allocated here, from the request's own length).
    pub fn new(ty: u16, offset: u64, length: u32) -> Pending {
        Pending {
            ty,
            offset,
            length,
            data: if ty == CMD_READ {
                vec![0; length as usize]
            } else {
                Vec::new()
            },
            dest: None,
            covered: 0,
            status: Vec::new(),
            error: None,
        }
    }

    /// A pending read whose data goes straight into `len` bytes at `ptr` (`len` must equal
    /// `length`).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for writes, and neither read nor written by anyone else,
    /// until the reply parser has dropped or returned this `Pending` (the connection guarantees
    /// this by completing the request only when its reader is done with it).
    pub unsafe fn with_dest(offset: u64, length: u32, ptr: *mut u8, len: usize) -> Pending {
        debug_assert_eq!(len, length as usize);
        Pending {
            ty: CMD_READ,
            offset,
            length,
            data: Vec::new(),
            dest: Some(RawDest { ptr, len }),
            covered: 0,
            status: Vec::new(),
            error: None,
        }
    }

    /// The bytes read data goes into.
    pub fn buf(&mut self) -> &mut [u8] {
        match self.dest {
            // SAFETY: `with_dest`'s contract: the memory is valid and exclusively ours while
            // the request is pending.
            Some(d) => unsafe { std::slice::from_raw_parts_mut(d.ptr, d.len) },
            None => &mut self.data,
        }
    }
}

/// A name for a command in messages.
pub fn command_name(ty: u16) -> &'static str {
    match ty {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_FLUSH => "flush",
        CMD_TRIM => "trim",
        CMD_WRITE_ZEROES => "write zeroes",
        CMD_BLOCK_STATUS => "block status",
        _ => "request",
    }
}

/// Error chunk type without offset.
const REPLY_ERROR: u16 = REPLY_TYPE_ERROR_BIT | 1;
/// Error chunk type with an offset.
const REPLY_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

fn take<'a>(
    local: &'a mut HashMap<u64, Pending>,
    fetch: &mut dyn FnMut(u64) -> Option<Pending>,
    cookie: u64,
) -> Result<&'a mut Pending> {
    if let std::collections::hash_map::Entry::Vacant(v) = local.entry(cookie) {
        let p = fetch(cookie).ok_or_else(|| {
            Error::corrupt(format!(
                "NBD server replied to an unknown request (cookie {cookie})"
            ))
        })?;
        v.insert(p);
    }
    Ok(local.get_mut(&cookie).expect("inserted above"))
}

fn finish(local: &mut HashMap<u64, Pending>, cookie: u64) -> Result<Option<(u64, Pending)>> {
    let p = local.remove(&cookie).expect("present");
    if p.error.is_none() && p.ty == CMD_READ && p.covered != p.length as u64 {
        return Err(Error::corrupt(format!(
            "NBD server's read reply covered {} of {} bytes",
            p.covered, p.length
        )));
    }
    Ok(Some((cookie, p)))
}

/// Read one simple reply or structured chunk from `r` and apply it. `local` holds requests whose
/// reply has started; `fetch` hands over a request the first time its cookie appears. Returns the
/// request when its reply is complete (its `error` set if the server failed it), `None` while
/// more chunks are due; an `Err` means the stream is unusable (protocol violation or I/O error).
pub fn read_message(
    r: &mut impl Read,
    local: &mut HashMap<u64, Pending>,
    fetch: &mut dyn FnMut(u64) -> Option<Pending>,
    structured: bool,
) -> Result<Option<(u64, Pending)>> {
    let mut m = [0u8; 4];
    read_exact(r, &mut m, "a reply")?;
    match be32(&m, 0) {
        SIMPLE_MAGIC => {
            let mut h = [0u8; 12];
            read_exact(r, &mut h, "a reply")?;
            let (err, cookie) = (be32(&h, 0), be64(&h, 4));
            let p = take(local, fetch, cookie)?;
            if p.covered != 0 || !p.status.is_empty() || p.error.is_some() {
                return Err(Error::corrupt(
                    "NBD server sent a simple reply in the middle of a structured one",
                ));
            }
            if err != 0 {
                p.error = Some(errno_error(err, command_name(p.ty), "").with_offset(p.offset));
            } else if p.ty == CMD_READ {
                if structured {
                    return Err(Error::corrupt(
                        "NBD server sent a simple reply with data after agreeing to structured replies",
                    ));
                }
                read_exact(r, p.buf(), "read data")?;
                p.covered = p.length as u64;
            }
            finish(local, cookie)
        }
        STRUCTURED_MAGIC if structured => {
            let mut h = [0u8; 16];
            read_exact(r, &mut h, "a reply chunk")?;
            let (flags, ty, cookie, len) = (be16(&h, 0), be16(&h, 2), be64(&h, 4), be32(&h, 12));
            let p = take(local, fetch, cookie)?;
            let done = flags & REPLY_FLAG_DONE != 0;
            match ty {
                REPLY_NONE => {
                    if len != 0 || !done {
                        return Err(Error::corrupt("NBD server sent a malformed NONE chunk"));
                    }
                }
                REPLY_OFFSET_DATA => {
                    if p.ty != CMD_READ || len < 9 {
                        return Err(Error::corrupt("NBD server sent an unexpected data chunk"));
                    }
                    let mut ob = [0u8; 8];
                    read_exact(r, &mut ob, "read data")?;
                    let (at, n) = (be64(&ob, 0), (len - 8) as u64);
                    let end = p.offset + p.length as u64;
                    if at < p.offset || at.checked_add(n).is_none_or(|e| e > end) {
                        return Err(Error::corrupt("NBD read data chunk outside the request"));
                    }
                    let s = (at - p.offset) as usize;
                    read_exact(r, &mut p.buf()[s..s + n as usize], "read data")?;
                    p.covered += n;
                }
                _ => {
                    if len > MAX_PAYLOAD {
                        return Err(Error::corrupt(format!(
                            "NBD reply chunk of {len} bytes is too large"
                        )));
                    }
                    let mut b = vec![0u8; len as usize];
                    read_exact(r, &mut b, "a reply chunk")?;
                    apply_chunk(p, ty, &b)?;
                }
            }
            if p.covered > p.length as u64 {
                return Err(Error::corrupt("NBD read reply chunks overlap"));
            }
            if done {
                finish(local, cookie)
            } else {
                Ok(None)
            }
        }
        _ => Err(Error::corrupt("NBD server sent a reply with a bad magic")),
    }
}

/// An error chunk's errno, EIO when the server sent 0.
fn nonzero(e: u32) -> u32 {
    if e == 0 {
        5
    } else {
        e
    }
}

/// Apply a buffered (non-data) chunk.
fn apply_chunk(p: &mut Pending, ty: u16, b: &[u8]) -> Result<()> {
    match ty {
        REPLY_OFFSET_HOLE => {
            if p.ty != CMD_READ || b.len() != 12 {
                return Err(Error::corrupt("NBD server sent an unexpected hole chunk"));
            }
            let (at, n) = (be64(b, 0), be32(b, 8) as u64);
            let end = p.offset + p.length as u64;
            if n == 0 || at < p.offset || at.checked_add(n).is_none_or(|e| e > end) {
                return Err(Error::corrupt("NBD hole chunk outside the request"));
            }
            // Reads land in the caller's memory, which holds stale bytes: zero the hole
            // explicitly (the coverage check makes sure every byte of a successful read was
            // written by a data or hole chunk).
            let s = (at - p.offset) as usize;
            p.buf()[s..s + n as usize].fill(0);
            p.covered += n;
        }
        REPLY_BLOCK_STATUS => {
            if p.ty != CMD_BLOCK_STATUS || b.len() < 12 || !(b.len() - 4).is_multiple_of(8) {
                return Err(Error::corrupt(
                    "NBD server sent an unexpected block status chunk",
                ));
            }
            let ctx = be32(b, 0);
            for d in b[4..].chunks_exact(8) {
                let (len, flags) = (be32(d, 0), be32(d, 4));
                if len == 0 {
                    return Err(Error::corrupt("NBD block status descriptor of length 0"));
                }
                if p.status.len() >= MAX_DESCRIPTORS {
                    return Err(Error::corrupt(
                        "NBD server sent too many block status descriptors",
                    ));
                }
                p.status.push((ctx, len, flags));
            }
        }
        REPLY_ERROR | REPLY_ERROR_OFFSET => {
            let extra = if ty == REPLY_ERROR_OFFSET { 8 } else { 0 };
            if b.len() < 6 + extra {
                return Err(Error::corrupt("NBD server sent a short error chunk"));
            }
            let ml = be16(b, 4) as usize;
            if 6 + ml + extra != b.len() {
                return Err(Error::corrupt("NBD server sent a malformed error chunk"));
            }
            // An error chunk never means success, even with errno 0.
            let errno = nonzero(be32(b, 0));
            let msg = String::from_utf8_lossy(&b[6..6 + ml]);
            let at = if extra > 0 { be64(b, 6 + ml) } else { p.offset };
            if p.error.is_none() {
                p.error = Some(errno_error(errno, command_name(p.ty), &msg).with_offset(at));
            }
        }
        t if t & REPLY_TYPE_ERROR_BIT != 0 && b.len() >= 6 => {
            // Unknown error types carry errno and message like ERROR (the protocol says so).
            if p.error.is_none() {
                p.error = Some(errno_error(nonzero(be32(b, 0)), command_name(p.ty), ""));
            }
        }
        t => {
            return Err(Error::corrupt(format!(
                "NBD server sent an unexpected reply chunk (type {t})"
            )))
        }
    }
    Ok(())
}
