//! The VHDX log: a circular buffer of entries that journal metadata (and possibly payload)
//! sector writes. An entry is valid when its checksum, GUID and sequence numbers agree; the
//! active sequence ends at the valid entry with the highest sequence number and starts at that
//! entry's `tail`. Replaying it writes each data sector and zero range to its file offset.
//!
//! ```text
//! entry header (64): 0 "loge" u32 | 4 checksum u32 (CRC-32C over entry_length bytes)
//!   8 entry_length u32 (4 KiB multiple) | 12 tail u32 | 16 sequence_number u64
//!   24 descriptor_count u32 | 28 reserved | 32 log_guid [16]
//!   48 flushed_file_offset u64 | 56 last_file_offset u64
//! descriptors (32 each, from 64, padded to 4 KiB sectors):
//!   data: 0 "desc" | 4 trailing_bytes [4] | 8 leading_bytes [8] | 16 file_offset u64 | 24 seq u64
//!   zero: 0 "zero" | 4 reserved | 8 zero_length u64 | 16 file_offset u64 | 24 seq u64
//! data sectors (4 KiB each, one per data descriptor, in order):
//!   0 "data" | 4 sequence_high u32 | 8 data [4084] | 4092 sequence_low u32
//! a sector is leading_bytes ++ data ++ trailing_bytes
//! ```
use super::header::VhdxHeader;
use super::{crc_ok, set_crc, Guid, MIB};
use crate::bytes::{le32, le64};
use qimg_core::{Error, Result, Storage};

/// Entry signature "loge".
pub const ENTRY_SIGNATURE: u32 = 0x6567_6f6c;
/// Data descriptor signature "desc".
pub const DESC_SIGNATURE: u32 = 0x6373_6564;
/// Zero descriptor signature "zero".
pub const ZERO_SIGNATURE: u32 = 0x6f72_657a;
/// Data sector signature "data".
pub const DATA_SIGNATURE: u32 = 0x6174_6164;
/// The log's unit.
pub const SECTOR: u64 = 4096;
/// Largest log qimg reads (QEMU creates 1 MiB; Hyper-V 1 MiB too).
pub const MAX_LOG: u64 = 1 << 30;

/// One journalled write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOp {
    /// Write a 4 KiB sector at a file offset.
    Data {
        /// File offset (4 KiB multiple).
        offset: u64,
        /// The sector.
        sector: Box<[u8]>,
    },
    /// Zero a range.
    Zero {
        /// File offset (4 KiB multiple).
        offset: u64,
        /// Length (4 KiB multiple).
        length: u64,
    },
}

/// The active sequence, ready to replay.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Writes in order.
    pub ops: Vec<LogOp>,
    /// The file must be at least this long before replay (else it was truncated).
    pub flushed_file_offset: u64,
    /// The file must be at least this long after replay.
    pub last_file_offset: u64,
    /// Sequence number of the newest entry.
    pub last_sequence: u64,
    /// Entries in the sequence.
    pub entries: usize,
}

/// A parsed, checksummed entry (position and the fields the search needs).
struct Entry {
    pos: u64,
    len: u64,
    tail: u64,
    seq: u64,
    flushed: u64,
    last: u64,
    ops: Vec<LogOp>,
}

/// Number of 4 KiB sectors holding the header and `n` descriptors.
pub fn desc_sectors(n: u64) -> u64 {
    (n + 2).div_ceil(128)
}

/// Read `len` bytes of the circular log at `pos`, wrapping at the end.
fn read_wrapped(s: &dyn Storage, h: &VhdxHeader, pos: u64, len: u64) -> Result<Vec<u8>> {
    let log_len = h.log_length as u64;
    let mut b = vec![0u8; len as usize];
    let first = len.min(log_len - pos);
    s.read_at(&mut b[..first as usize], h.log_offset + pos)?;
    if first < len {
        s.read_at(&mut b[first as usize..], h.log_offset)?;
    }
    Ok(b)
}

/// Parse the entry at `pos`, or `None` if it is not a valid entry of this log.
fn parse_entry(s: &dyn Storage, h: &VhdxHeader, pos: u64) -> Result<Option<Entry>> {
    let log_len = h.log_length as u64;
    let head = read_wrapped(s, h, pos, SECTOR)?;
    if le32(&head, 0) != ENTRY_SIGNATURE {
        return Ok(None);
    }
    let len = le32(&head, 8) as u64;
    let tail = le32(&head, 12) as u64;
    let seq = le64(&head, 16);
    let n = le32(&head, 24) as u64;
    if len == 0
        || !len.is_multiple_of(SECTOR)
        || len > log_len
        || !tail.is_multiple_of(SECTOR)
        || tail >= log_len
        || seq == 0
        || Guid::read(&head, 32) != h.log_guid
        || desc_sectors(n) * SECTOR > len
    {
        return Ok(None);
    }
    let b = read_wrapped(s, h, pos, len)?;
    if !crc_ok(&b, 4) {
        return Ok(None);
    }
    let ds = desc_sectors(n);
    let mut data_at = ds * SECTOR;
    let mut ops = Vec::new();
    for i in 0..n {
        let d = &b[(64 + i * 32) as usize..(96 + i * 32) as usize];
        if le64(d, 24) != seq {
            return Ok(None);
        }
        let offset = le64(d, 16);
        match le32(d, 0) {
            DESC_SIGNATURE => {
                if data_at + SECTOR > len || !offset.is_multiple_of(SECTOR) {
                    return Ok(None);
                }
                let sec = &b[data_at as usize..(data_at + SECTOR) as usize];
                let (hi, lo) = (le32(sec, 4) as u64, le32(sec, 4092) as u64);
                if le32(sec, 0) != DATA_SIGNATURE || (hi << 32 | lo) != seq {
                    return Ok(None);
                }
                let mut out = vec![0u8; SECTOR as usize].into_boxed_slice();
                out[..8].copy_from_slice(&d[8..16]);
                out[8..4092].copy_from_slice(&sec[8..4092]);
                out[4092..].copy_from_slice(&d[4..8]);
                ops.push(LogOp::Data {
                    offset,
                    sector: out,
                });
                data_at += SECTOR;
            }
            ZERO_SIGNATURE => {
                let length = le64(d, 8);
                if !offset.is_multiple_of(SECTOR) || !length.is_multiple_of(SECTOR) {
                    return Ok(None);
                }
                ops.push(LogOp::Zero { offset, length });
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(Entry {
        pos,
        len,
        tail,
        seq,
        flushed: le64(&b, 48),
        last: le64(&b, 56),
        ops,
    }))
}

/// Find the active sequence of the log `h` names. `None` when the log is empty (a zero
/// `log_guid`, or no valid entry carries it).
pub fn search(s: &dyn Storage, h: &VhdxHeader) -> Result<Option<Replay>> {
    if h.log_guid.is_zero() {
        return Ok(None);
    }
    h.validate_log()?;
    let log_len = h.log_length as u64;
    if log_len > MAX_LOG {
        return Err(Error::unsupported(format!(
            "VHDX log of {log_len} bytes is larger than qimg reads ({MAX_LOG})"
        )));
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut pos = 0;
    while pos < log_len {
        match parse_entry(s, h, pos)? {
            Some(e) => {
                pos += e.len;
                entries.push(e);
            }
            None => pos += SECTOR,
        }
    }
    let Some(head) = entries.iter().max_by_key(|e| e.seq) else {
        return Ok(None);
    };
    // Walk from the head's tail to the head: consecutive, valid, adjacent entries.
    let mut chain: Vec<&Entry> = Vec::new();
    let mut at = head.tail;
    loop {
        let e = entries
            .iter()
            .find(|e| e.pos == at)
            .ok_or_else(|| Error::corrupt("VHDX log is corrupt: the active sequence is broken"))?;
        if let Some(prev) = chain.last() {
            if e.seq != prev.seq + 1 {
                return Err(Error::corrupt(
                    "VHDX log is corrupt: sequence numbers are not consecutive",
                ));
            }
        }
        chain.push(e);
        if e.pos == head.pos {
            break;
        }
        if chain.len() > entries.len() {
            return Err(Error::corrupt("VHDX log is corrupt: the sequence loops"));
        }
        at = (e.pos + e.len) % log_len;
    }
    if chain[chain.len() - 1].seq != head.seq {
        return Err(Error::corrupt(
            "VHDX log is corrupt: the head is not the newest entry",
        ));
    }
    let mut r = Replay {
        flushed_file_offset: head.flushed,
        last_file_offset: head.last,
        last_sequence: head.seq,
        entries: chain.len(),
        ops: Vec::new(),
    };
    let log_range = (h.log_offset, h.log_offset + log_len);
    for e in chain {
        for op in &e.ops {
            let (o, l) = match op {
                LogOp::Data { offset, .. } => (*offset, SECTOR),
                LogOp::Zero { offset, length } => (*offset, *length),
            };
            let end = o
                .checked_add(l)
                .filter(|&e| e <= 1 << 62)
                .ok_or_else(|| Error::corrupt("VHDX log entry writes out of range"))?;
            if o < MIB || (o < log_range.1 && end > log_range.0) {
                return Err(Error::corrupt(format!(
                    "VHDX log entry writes to 0x{o:x}, inside the header section or the log"
                )));
            }
            r.ops.push(op.clone());
        }
    }
    Ok(Some(r))
}

/// Replay `r` into the file: check its length, write every op in order, extend to
/// `last_file_offset`, and flush. The caller then clears the header's `log_guid`.
pub fn replay(s: &dyn Storage, r: &Replay) -> Result<()> {
    check_length(s.size()?, r)?;
    for op in &r.ops {
        match op {
            LogOp::Data { offset, sector } => s.write_at(sector, *offset)?,
            LogOp::Zero { offset, length } => s.write_zeroes(*offset, *length, false)?,
        }
    }
    if s.size()? < r.last_file_offset {
        s.truncate(r.last_file_offset)?;
    }
    s.flush()
}

/// QEMU refuses a log whose `flushed_file_offset` lies past the end of the file: the file was
/// truncated after the log was written.
pub fn check_length(file_size: u64, r: &Replay) -> Result<()> {
    if r.flushed_file_offset > file_size {
        return Err(Error::corrupt(format!(
            "VHDX log flushed file offset 0x{:x} is past the end of the file (0x{file_size:x}); the image was truncated",
            r.flushed_file_offset
        )));
    }
    Ok(())
}

/// Most data sectors one entry can hold in a log of `log_len` bytes.
pub fn max_sectors(log_len: u64) -> u64 {
    let total = log_len / SECTOR;
    let mut n = total.saturating_sub(1);
    while n > 0 && desc_sectors(n) + n > total {
        n -= 1;
    }
    n
}

/// Encode one entry at log position `pos` (its own tail: a sequence of one) journalling 4 KiB
/// `sectors` (file offset, contents).
pub fn encode_entry(
    seq: u64,
    guid: Guid,
    pos: u64,
    flushed: u64,
    last: u64,
    sectors: &[(u64, &[u8])],
) -> Vec<u8> {
    let n = sectors.len() as u64;
    let ds = desc_sectors(n);
    let len = (ds + n) * SECTOR;
    let mut b = vec![0u8; len as usize];
    b[0..4].copy_from_slice(&ENTRY_SIGNATURE.to_le_bytes());
    b[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(pos as u32).to_le_bytes());
    b[16..24].copy_from_slice(&seq.to_le_bytes());
    b[24..28].copy_from_slice(&(n as u32).to_le_bytes());
    b[32..48].copy_from_slice(&guid.0);
    b[48..56].copy_from_slice(&flushed.to_le_bytes());
    b[56..64].copy_from_slice(&last.to_le_bytes());
    for (i, (off, data)) in sectors.iter().enumerate() {
        let d = 64 + i * 32;
        b[d..d + 4].copy_from_slice(&DESC_SIGNATURE.to_le_bytes());
        b[d + 4..d + 8].copy_from_slice(&data[4092..4096]);
        b[d + 8..d + 16].copy_from_slice(&data[..8]);
        b[d + 16..d + 24].copy_from_slice(&off.to_le_bytes());
        b[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
        let s = ((ds + i as u64) * SECTOR) as usize;
        b[s..s + 4].copy_from_slice(&DATA_SIGNATURE.to_le_bytes());
        b[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
        b[s + 8..s + 4092].copy_from_slice(&data[8..4092]);
        b[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
    }
    set_crc(&mut b, 4);
    b
}
