//! NBD wire format: magics, option and command numbers, and the request/reply headers
//! (the NBD protocol document, "fixed newstyle" negotiation and the transmission phase).
//!
//! Every integer is big-endian.
//! ```text
//! server greeting      u64 NBDMAGIC, u64 IHAVEOPT, u16 handshake flags
//! client flags         u32
//! option request       u64 IHAVEOPT, u32 option, u32 length, data
//! option reply         u64 REPLY_MAGIC, u32 option, u32 reply type, u32 length, data
//! request              u32 REQUEST_MAGIC, u16 command flags, u16 type, u64 cookie,
//!                      u64 offset, u32 length, [data for WRITE]
//! simple reply         u32 SIMPLE_MAGIC, u32 error, u64 cookie, [data for READ]
//! structured chunk     u32 STRUCTURED_MAGIC, u16 flags, u16 type, u64 cookie, u32 length,
//!                      payload
//! ```
use crate::error::{Error, ErrorCode, Result};
use std::io::Read;

/// `NBDMAGIC`.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation (and each option request).
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Old-style negotiation (not supported: QEMU dropped it too).
pub const OLDSTYLE: u64 = 0x0000_4202_8186_1253;
/// Option reply magic.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Request magic.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic.
pub const SIMPLE_MAGIC: u32 = 0x6744_6698;
/// Structured reply chunk magic.
pub const STRUCTURED_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after the export data.
pub const FLAG_NO_ZEROES: u16 = 2;

/// Options.
pub const OPT_ABORT: u32 = 2;
/// List exports.
pub const OPT_LIST: u32 = 3;
/// Upgrade the connection to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Information about an export without ending negotiation.
pub const OPT_INFO: u32 = 6;
/// Select an export and end negotiation.
pub const OPT_GO: u32 = 7;
/// Structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Metadata contexts for block status.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: one export (OPT_LIST).
pub const REP_SERVER: u32 = 2;
/// Option reply: information about the export (OPT_GO).
pub const REP_INFO: u32 = 3;
/// Option reply: a metadata context id.
pub const REP_META_CONTEXT: u32 = 4;
/// Option replies with this bit are errors.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option error: the option is not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Option error: refused by policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// Option error: TLS is required first.
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
/// Option error: unknown export.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;

/// OPT_GO information: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// OPT_GO information: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TF_HAS_FLAGS: u16 = 1;
/// The export is read-only.
pub const TF_READ_ONLY: u16 = 1 << 1;
/// FLUSH is supported.
pub const TF_SEND_FLUSH: u16 = 1 << 2;
/// FUA is supported.
pub const TF_SEND_FUA: u16 = 1 << 3;
/// TRIM is supported.
pub const TF_SEND_TRIM: u16 = 1 << 5;
/// WRITE_ZEROES is supported.
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Several connections to the export see each other's writes (multi-conn).
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
/// WRITE_ZEROES accepts the FAST_ZERO flag.
pub const TF_SEND_FAST_ZERO: u16 = 1 << 11;

/// Commands.
pub const CMD_READ: u16 = 0;
/// Write.
pub const CMD_WRITE: u16 = 1;
/// Disconnect.
pub const CMD_DISC: u16 = 2;
/// Flush.
pub const CMD_FLUSH: u16 = 3;
/// Trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Block status.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access (the write is durable when acknowledged).
pub const CMDF_FUA: u16 = 1;
/// Command flag: write zeroes may not punch a hole.
pub const CMDF_NO_HOLE: u16 = 1 << 1;
/// Command flag: one block status descriptor is enough.
pub const CMDF_REQ_ONE: u16 = 1 << 3;
/// Command flag: fail write zeroes fast rather than write zeros slowly.
pub const CMDF_FAST_ZERO: u16 = 1 << 4;

/// Structured chunk flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Chunk types.
pub const REPLY_NONE: u16 = 0;
/// Data at an offset.
pub const REPLY_OFFSET_DATA: u16 = 1;
/// A hole (zeros) at an offset.
pub const REPLY_OFFSET_HOLE: u16 = 2;
/// Block status descriptors.
pub const REPLY_BLOCK_STATUS: u16 = 5;
/// Chunk types with this bit are errors.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// base:allocation flag: a hole (not allocated).
pub const STATE_HOLE: u32 = 1;
/// base:allocation flag: reads as zeros.
pub const STATE_ZERO: u32 = 2;

/// Largest option reply or structured chunk payload accepted (besides read data): bounds the
/// memory a hostile server can make the client allocate.
pub const MAX_PAYLOAD: u32 = 1 << 20;

/// Read exactly `buf.len()` bytes; a closed connection is an I/O error naming `what`.
pub fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::new(
                ErrorCode::Io,
                format!("NBD server closed the connection during {what}"),
            )
        } else if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            Error::new(
                ErrorCode::Io,
                format!("NBD server did not answer during {what} (timed out)"),
            )
        } else {
            Error::io(format!("NBD: reading {what}"), &e)
        }
    })
}

/// Read a big-endian u16/u32/u64 from `b` at `o`.
pub fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// See [`be16`].
pub fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// See [`be16`].
pub fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

/// A request header (28 bytes).
pub fn request(flags: u16, ty: u16, cookie: u64, offset: u64, length: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&ty.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..28].copy_from_slice(&length.to_be_bytes());
    b
}

/// The error an NBD errno stands for (the protocol's values are Linux's).
pub fn errno_error(errno: u32, what: &str, message: &str) -> Error {
    let code = match errno {
        1 | 13 => ErrorCode::ReadOnly,         // EPERM, EACCES
        28 => ErrorCode::Io,                   // ENOSPC
        22 | 75 => ErrorCode::InvalidArgument, // EINVAL, EOVERFLOW
        95 | 108 => ErrorCode::Unsupported,    // ENOTSUP, ESHUTDOWN
        _ => ErrorCode::Io,
    };
    let extra = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    let mut e = Error::new(code, format!("NBD {what} failed (errno {errno}){extra}"));
    e.errno = Some(errno as i32);
    e
}
