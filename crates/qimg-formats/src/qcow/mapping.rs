//! qcow (v1) table entries: big-endian u64.
//!
//! ```text
//! L1 entry: host offset of an L2 table of (1 << l2_bits) entries, 0 = none
//! L2 entry: bit 63 = 0: host offset of a data cluster, 0 = unallocated
//!           bit 63 = 1: compressed; bits 0 .. 62-cluster_bits = host byte offset,
//!                       the next cluster_bits bits = compressed length in bytes
//! ```
//! Compressed data is raw deflate (QEMU inflates with a 4 KiB window) filling one cluster.
use crate::l2map::{Entry, TableFormat};
use crate::qcow2::compress;
use qimg_core::{Error, Result, Storage};

/// Bit 63 of an L2 entry: the cluster is compressed.
pub const OFLAG_COMPRESSED: u64 = 1 << 63;

/// The qcow entry codec.
pub struct QcowTables {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Bytes in one L2 table.
    pub l2_bytes: u64,
    /// Host file length at open (bounds compressed data).
    pub file_len: u64,
}

impl QcowTables {
    /// Host offset and byte length of a compressed cluster's data.
    pub fn locate(&self, raw: u64) -> (u64, u64) {
        let shift = 63 - self.cluster_bits;
        let off = raw & ((1u64 << shift) - 1);
        let len = (raw >> shift) & ((1u64 << self.cluster_bits) - 1);
        (off, len)
    }
}

impl TableFormat for QcowTables {
    fn big_endian(&self) -> bool {
        true
    }

    fn decode(&self, raw: u64, file_size: u64) -> Result<Entry> {
        if raw == 0 {
            return Ok(Entry::Unallocated);
        }
        if raw & OFLAG_COMPRESSED != 0 {
            let (off, len) = self.locate(raw);
            if len == 0
                || off
                    .checked_add(len)
                    .is_none_or(|e| e > file_size.max(self.file_len))
            {
                return Err(Error::corrupt(format!(
                    "qcow compressed cluster {off:#x}+{len} lies outside the file"
                ))
                .with_offset(off));
            }
            return Ok(Entry::Compressed(raw));
        }
        if raw >= file_size || raw < super::header::HEADER_LEN as u64 {
            return Err(Error::corrupt(format!(
                "qcow data cluster offset {raw:#x} lies outside the file"
            ))
            .with_offset(raw));
        }
        Ok(Entry::Data(raw))
    }

    fn check_l2_offset(&self, off: u64, file_size: u64) -> Result<()> {
        if off < super::header::HEADER_LEN as u64
            || off.checked_add(self.l2_bytes).is_none_or(|e| e > file_size)
        {
            return Err(Error::corrupt(format!(
                "qcow L2 table offset {off:#x} lies outside the file"
            ))
            .with_offset(off));
        }
        Ok(())
    }

    fn zero_entry(&self) -> Option<u64> {
        None
    }

    fn inflate(&self, storage: &dyn Storage, raw: u64, out: &mut [u8]) -> Result<()> {
        let (off, len) = self.locate(raw);
        let mut input = vec![0u8; len as usize];
        storage.read_at(&mut input, off)?;
        compress::decompress(compress::ZLIB, &input, out)
    }
}
