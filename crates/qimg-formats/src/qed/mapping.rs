//! QED table entries: little-endian u64 host offsets; 0 = unallocated, 1 = zero cluster.
//!
//! ```text
//! Table { uint64_t offsets[table_size * cluster_size / 8]; }   /* L1 and L2 alike */
//! ```
//! An L1 entry is the offset of an L2 table (`table_size` clusters); an L2 entry is the offset of
//! a data cluster. Offsets must be cluster aligned, past the header and inside the file.
use super::header::{QedHeader, ZERO_CLUSTER};
use crate::l2map::{Entry, TableFormat};
use qimg_core::{Error, Result};

/// The QED entry codec, with the header bounds that validate offsets.
pub struct QedTables {
    /// The header the tables belong to.
    pub header: QedHeader,
}

impl TableFormat for QedTables {
    fn big_endian(&self) -> bool {
        false
    }

    fn decode(&self, raw: u64, file_size: u64) -> Result<Entry> {
        match raw {
            0 => Ok(Entry::Unallocated),
            ZERO_CLUSTER => Ok(Entry::Zero),
            off if self.header.cluster_offset_valid(off, file_size) => Ok(Entry::Data(off)),
            off => Err(
                Error::corrupt(format!("QED data cluster offset {off:#x} is invalid"))
                    .with_offset(off),
            ),
        }
    }

    fn check_l2_offset(&self, off: u64, file_size: u64) -> Result<()> {
        if self.header.table_offset_valid(off, file_size) {
            Ok(())
        } else {
            Err(Error::corrupt(format!("QED L2 table offset {off:#x} is invalid")).with_offset(off))
        }
    }

    fn zero_entry(&self) -> Option<u64> {
        Some(ZERO_CLUSTER)
    }
}
