//! Server-side pieces of the NBD wire format that the client module ([`crate::nbd::wire`],
//! re-exported here) does not define: the option
//! numbers and error replies a server answers with, the extra transmission flags it advertises,
//! and encoders for option replies, simple replies and structured reply chunks.
//!
//! ```text
//! option reply        u64 REPLY_MAGIC, u32 option, u32 reply type, u32 length, data
//! simple reply        u32 SIMPLE_MAGIC, u32 error, u64 cookie
//! structured chunk    u32 STRUCTURED_MAGIC, u16 flags, u16 type, u64 cookie, u32 length, payload
//! OFFSET_DATA         u64 offset, data
//! OFFSET_HOLE         u64 offset, u32 length
//! BLOCK_STATUS        u32 context id, { u32 length, u32 flags }...
//! ERROR               u32 errno, u16 message length, message
//! ```
pub use crate::nbd::wire::*;

/// `NBD_OPT_EXPORT_NAME`: the old way to pick an export (no error path: the server hangs up).
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_LIST_META_CONTEXT`.
pub const OPT_LIST_META_CONTEXT: u32 = 9;

/// Option error: syntactically or semantically invalid.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// Option error: the request is too big to process.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// OPT_GO/INFO information: the export name.
pub const INFO_NAME: u16 = 1;
/// OPT_GO/INFO information: the export description.
pub const INFO_DESCRIPTION: u16 = 2;

/// Transmission flag: the server honours `NBD_CMD_FLAG_DF` (structured replies only).
pub const TF_SEND_DF: u16 = 1 << 7;

/// Command flag: do not fragment a structured read reply.
pub const CMDF_DF: u16 = 1 << 2;

/// Structured chunk type: an error without an offset.
pub const REPLY_ERROR: u16 = REPLY_TYPE_ERROR_BIT | 1;

/// NBD errno values (the protocol's numbering, Linux's).
pub const EPERM: u32 = 1;
/// I/O error.
pub const EIO: u32 = 5;
/// Out of memory.
pub const ENOMEM: u32 = 12;
/// Invalid request.
pub const EINVAL: u32 = 22;
/// No space (write past the end).
pub const ENOSPC: u32 = 28;
/// Value too large.
pub const EOVERFLOW: u32 = 75;
/// Not supported (fast zero refused).
pub const ENOTSUP: u32 = 95;
/// The server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Largest READ/WRITE payload served, as qemu-nbd's `NBD_MAX_BUFFER_SIZE` (32 MiB).
pub const MAX_BUFFER: u32 = 32 << 20;
/// Largest option payload accepted (qemu-nbd refuses more than this too).
pub const MAX_OPTION: u32 = 64 << 10;
/// Longest export name or metadata query (`NBD_MAX_STRING_SIZE`).
pub const MAX_STRING: u32 = 4096;
/// The id of `base:allocation` once selected.
pub const META_BASE_ALLOCATION: u32 = 1;
/// `base:allocation`.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id of `qemu:allocation-depth` once selected.
pub const META_ALLOCATION_DEPTH: u32 = 2;
/// `qemu:allocation-depth` (served with `-A`): per extent, 0 when no layer of the chain allocates
/// it, else the 1-based depth of the layer that does.
pub const ALLOCATION_DEPTH: &str = "qemu:allocation-depth";

/// An option reply: header and payload in one buffer.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// A simple reply header (16 bytes); READ data follows it.
pub fn simple_reply(errno: u32, cookie: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&errno.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured chunk header (20 bytes) for a payload of `length` bytes.
pub fn chunk_header(flags: u16, ty: u16, cookie: u64, length: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&STRUCTURED_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&ty.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

/// A structured `ERROR` chunk (always the last one of its reply).
pub fn error_chunk(cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(4096)];
    let mut b = chunk_header(REPLY_FLAG_DONE, REPLY_ERROR, cookie, 6 + msg.len() as u32).to_vec();
    b.extend_from_slice(&errno.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// The NBD errno a qimg error is reported as.
pub fn errno_of(e: &crate::Error) -> u32 {
    use crate::ErrorCode as C;
    if let Some(n) = e.errno {
        return match n {
            1 | 13 | 30 => EPERM, // EPERM, EACCES, EROFS
            12 => ENOMEM,
            22 => EINVAL,
            27 | 28 | 122 => ENOSPC, // EFBIG, ENOSPC, EDQUOT
            75 => EOVERFLOW,
            95 => ENOTSUP,
            108 => ESHUTDOWN,
            _ => EIO,
        };
    }
    match e.code {
        C::ReadOnly => EPERM,
        C::InvalidArgument => EINVAL,
        C::OutOfRange => ENOSPC,
        C::Unsupported => ENOTSUP,
        _ => EIO,
    }
}
