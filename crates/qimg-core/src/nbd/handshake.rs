//! NBD fixed-newstyle negotiation: the greeting, `NBD_OPT_STARTTLS` when TLS is configured,
//! structured replies and the `base:allocation` / `qemu:allocation-depth` metadata contexts when
//! the server offers them, then `NBD_OPT_GO` for the export (with its block size constraints);
//! or `NBD_OPT_LIST` to list exports. Every reply length is bounded before anything is
//! allocated, and a server demanding TLS when none is configured gets a clear error.
use super::wire::*;
use crate::error::{Error, ErrorCode, Result};
use std::io::{Read, Write};

/// What negotiation settled for the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags (`TF_*`).
    pub flags: u16,
    /// Preferred request alignment (1 when the server gave none).
    pub min_block: u32,
    /// Largest request payload the server accepts (32 MiB when it gave none).
    pub max_block: u32,
    /// Structured replies are in use.
    pub structured: bool,
    /// The `base:allocation` context id, when block status is available.
    pub base_allocation: Option<u32>,
    /// The `qemu:allocation-depth` context id, when the server offers it (qemu-nbd `-A`).
    pub allocation_depth: Option<u32>,
}

/// One export of an `NBD_OPT_LIST` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// Export name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
}

/// One option reply: (type, data).
fn option_reply(s: &mut impl Read, opt: u32) -> Result<(u32, Vec<u8>)> {
    let mut h = [0u8; 20];
    read_exact(s, &mut h, "negotiation")?;
    if be64(&h, 0) != REPLY_MAGIC || be32(&h, 8) != opt {
        return Err(Error::corrupt("NBD server sent a malformed option reply"));
    }
    let (ty, len) = (be32(&h, 12), be32(&h, 16));
    if len > MAX_PAYLOAD {
        return Err(Error::corrupt(format!(
            "NBD option reply of {len} bytes is too large"
        )));
    }
    let mut data = vec![0u8; len as usize];
    read_exact(s, &mut data, "negotiation")?;
    Ok((ty, data))
}

fn send_option(s: &mut impl Write, opt: u32, data: &[u8]) -> Result<()> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b)
        .map_err(|e| Error::io("NBD: sending an option", &e))
}

/// The error an option error reply stands for.
fn option_error(ty: u32, data: &[u8], export: &str) -> Error {
    let text = String::from_utf8_lossy(data).into_owned();
    let detail = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    match ty & !REP_FLAG_ERROR {
        6 => Error::new(
            ErrorCode::NotFound,
            format!("Requested export not available (export '{export}'){detail}"),
        ),
        5 => Error::unsupported(format!(
            "NBD server requires TLS, but no TLS credentials were given (use tls-creds){detail}"
        )),
        2 => Error::new(
            ErrorCode::ReadOnly,
            format!("NBD server refused by policy{detail}"),
        ),
        1 => Error::unsupported(format!("NBD server does not support the option{detail}")),
        n => Error::new(
            ErrorCode::Io,
            format!("NBD server error {n} during negotiation{detail}"),
        ),
    }
}

/// Read the server's greeting and send the client flags.
pub fn greet(s: &mut (impl Read + Write)) -> Result<()> {
    let mut g = [0u8; 18];
    read_exact(s, &mut g[..16], "the greeting")?;
    if be64(&g, 0) != NBDMAGIC {
        return Err(Error::new(
            ErrorCode::WrongFormat,
            "not an NBD server (bad greeting magic)",
        ));
    }
    if be64(&g, 8) == OLDSTYLE {
        return Err(Error::unsupported(
            "NBD server uses old-style negotiation, which is not supported",
        ));
    }
    if be64(&g, 8) != IHAVEOPT {
        return Err(Error::corrupt("NBD greeting has an unknown magic"));
    }
    read_exact(s, &mut g[16..18], "the greeting")?;
    let hflags = be16(&g, 16);
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Error::unsupported(
            "NBD server does not support fixed newstyle negotiation",
        ));
    }
    let cflags = u32::from(FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES));
    s.write_all(&cflags.to_be_bytes())
        .map_err(|e| Error::io("NBD: sending client flags", &e))
}

/// Ask for TLS (`NBD_OPT_STARTTLS`); the caller starts the TLS handshake on success. A server
/// that refuses is an error: there is no plaintext fallback.
pub fn starttls(s: &mut (impl Read + Write)) -> Result<()> {
    send_option(s, OPT_STARTTLS, &[])?;
    match option_reply(s, OPT_STARTTLS)? {
        (REP_ACK, _) => Ok(()),
        (t, d) if t & REP_FLAG_ERROR != 0 => {
            let text = String::from_utf8_lossy(&d).into_owned();
            Err(Error::unsupported(format!(
                "NBD server does not support TLS, which was required{}",
                if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                }
            )))
        }
        (t, _) => Err(Error::corrupt(format!(
            "NBD server answered STARTTLS with reply {t}"
        ))),
    }
}

/// List the server's exports (`NBD_OPT_LIST`), then end negotiation (`NBD_OPT_ABORT`).
pub fn list(s: &mut (impl Read + Write)) -> Result<Vec<ExportEntry>> {
    send_option(s, OPT_LIST, &[])?;
    let mut out = Vec::new();
    loop {
        match option_reply(s, OPT_LIST)? {
            (REP_SERVER, d) => {
                if d.len() < 4 || be32(&d, 0) as usize > d.len() - 4 {
                    return Err(Error::corrupt("NBD server sent a malformed export entry"));
                }
                let n = be32(&d, 0) as usize;
                out.push(ExportEntry {
                    name: String::from_utf8_lossy(&d[4..4 + n]).into_owned(),
                    description: String::from_utf8_lossy(&d[4 + n..]).into_owned(),
                });
                if out.len() > 1 << 16 {
                    return Err(Error::corrupt("NBD server listed too many exports"));
                }
            }
            (REP_ACK, _) => break,
            (t, d) if t & REP_FLAG_ERROR != 0 => {
                let e = option_error(t, &d, "");
                return Err(if t == REP_ERR_UNSUP || t == REP_ERR_POLICY {
                    Error::new(
                        ErrorCode::Unsupported,
                        format!("NBD server refused to list its exports{}", {
                            let m = String::from_utf8_lossy(&d).into_owned();
                            if m.is_empty() {
                                String::new()
                            } else {
                                format!(": {m}")
                            }
                        }),
                    )
                } else {
                    e
                });
            }
            (t, _) => {
                return Err(Error::corrupt(format!(
                    "NBD server sent reply {t} to OPT_LIST"
                )))
            }
        }
    }
    abort(s);
    Ok(out)
}

/// End negotiation without choosing an export (best effort: the server may just hang up).
pub fn abort(s: &mut (impl Read + Write)) {
    if send_option(s, OPT_ABORT, &[]).is_ok() {
        let _ = option_reply(s, OPT_ABORT);
    }
}

/// Negotiate `export` after [`greet`] (and [`starttls`]).
pub fn negotiate(s: &mut (impl Read + Write), export: &str) -> Result<Export> {
    if export.len() > 4096 {
        return Err(Error::invalid("NBD export name longer than 4096 bytes"));
    }
    // Structured replies (needed for block status).
    send_option(s, OPT_STRUCTURED_REPLY, &[])?;
    let structured = match option_reply(s, OPT_STRUCTURED_REPLY)? {
        (REP_ACK, _) => true,
        (REP_ERR_TLS_REQD, d) => return Err(option_error(REP_ERR_TLS_REQD, &d, export)),
        (t, _) if t & REP_FLAG_ERROR != 0 => false,
        (t, _) => {
            return Err(Error::corrupt(format!(
                "NBD server answered structured replies with reply {t}"
            )))
        }
    };

    let name = export.as_bytes();
    let (mut base_allocation, mut allocation_depth) = (None, None);
    if structured {
        let queries: [&[u8]; 2] = [b"base:allocation", b"qemu:allocation-depth"];
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name);
        d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q);
        }
        send_option(s, OPT_SET_META_CONTEXT, &d)?;
        for _ in 0..64 {
            match option_reply(s, OPT_SET_META_CONTEXT)? {
                (REP_META_CONTEXT, d) if d.len() >= 4 => {
                    if &d[4..] == queries[0] {
                        base_allocation = Some(be32(&d, 0));
                    } else if &d[4..] == queries[1] {
                        allocation_depth = Some(be32(&d, 0));
                    }
                }
                (REP_ACK, _) => break,
                (t, _) if t & REP_FLAG_ERROR != 0 => break,
                (t, _) => {
                    return Err(Error::corrupt(format!(
                        "NBD server sent reply {t} to a metadata context request"
                    )))
                }
            }
        }
    }

    let mut d = Vec::new();
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name);
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &d)?;
    let mut size_flags = None;
    let (mut min_block, mut max_block) = (1u32, 32u32 << 20);
    for _ in 0..64 {
        match option_reply(s, OPT_GO)? {
            (REP_INFO, d) if d.len() >= 2 => match be16(&d, 0) {
                INFO_EXPORT if d.len() >= 12 => size_flags = Some((be64(&d, 2), be16(&d, 10))),
                INFO_BLOCK_SIZE if d.len() >= 14 => {
                    let (min, max) = (be32(&d, 2), be32(&d, 10));
                    if !min.is_power_of_two() || min > 65536 || max < min {
                        return Err(Error::corrupt(format!(
                            "NBD server sent invalid block sizes (min {min}, max {max})"
                        )));
                    }
                    min_block = min;
                    max_block = max.min(32 << 20);
                }
                _ => {}
            },
            (REP_INFO, _) => {}
            (REP_ACK, _) => {
                let (size, flags) = size_flags.ok_or_else(|| {
                    Error::corrupt("NBD server finished OPT_GO without the export size")
                })?;
                if size > i64::MAX as u64 {
                    return Err(Error::corrupt(format!(
                        "NBD export size {size} is too large"
                    )));
                }
                return Ok(Export {
                    size,
                    flags,
                    min_block,
                    max_block,
                    structured,
                    base_allocation,
                    allocation_depth,
                });
            }
            (t, d) if t & REP_FLAG_ERROR != 0 => return Err(option_error(t, &d, export)),
            (t, _) => {
                return Err(Error::corrupt(format!(
                    "NBD server sent reply {t} to OPT_GO"
                )))
            }
        }
    }
    Err(Error::corrupt("NBD server sent too many OPT_GO replies"))
}
