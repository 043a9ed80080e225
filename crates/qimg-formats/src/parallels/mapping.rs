//! The BAT: guest cluster → host offset, held in memory (bounded by the header) with the dirty
//! entries written back in sector-sized runs on flush.
use super::header::{Header, HEADER_SIZE, SECTOR};
use crate::bytes::le32;
use qimg_core::{Error, Result, Storage};
use std::collections::BTreeSet;

/// The in-memory BAT.
pub struct Bat {
    /// One u32 per guest cluster, as on disk (units: [`Header::off_multiplier`]).
    pub entries: Vec<u32>,
    /// BAT sectors (index from the start of the BAT area) changed since the last flush.
    dirty: BTreeSet<u64>,
}

impl Bat {
    /// Read the whole BAT (its size was bounded by [`Header::parse`] against the file size).
    pub fn load(storage: &dyn Storage, h: &Header) -> Result<Bat> {
        let n = h.bat_entries as usize;
        let mut raw = vec![0u8; n * 4];
        storage.read_at(&mut raw, HEADER_SIZE)?;
        let entries = (0..n).map(|i| le32(&raw, i * 4)).collect();
        Ok(Bat {
            entries,
            dirty: BTreeSet::new(),
        })
    }

    /// Host byte offset of guest cluster `idx`, or `None` when unallocated (or beyond the BAT).
    pub fn host(&self, h: &Header, idx: u64) -> Option<u64> {
        let e = *self.entries.get(usize::try_from(idx).ok()?)?;
        (e != 0).then(|| u64::from(e) * h.off_multiplier())
    }

    /// Point guest cluster `idx` at host byte offset `host` (0 = unallocated).
    pub fn set(&mut self, h: &Header, idx: usize, host: u64) -> Result<()> {
        let unit = host / h.off_multiplier();
        let e = u32::try_from(unit)
            .map_err(|_| Error::unsupported("parallels: image too large for the BAT"))?;
        self.entries[idx] = e;
        // Byte of the entry, counted from the start of the file, gives its sector.
        self.dirty.insert((HEADER_SIZE + 4 * idx as u64) / SECTOR);
        Ok(())
    }

    /// Write the changed BAT sectors (the header sector's tail included), in runs.
    pub fn write_dirty(&mut self, storage: &dyn Storage, h: &Header) -> Result<()> {
        let end = h.bat_end();
        for &sector in &self.dirty {
            let start = (sector * SECTOR).max(HEADER_SIZE);
            let stop = ((sector + 1) * SECTOR).min(end);
            if start >= stop {
                continue;
            }
            let first = ((start - HEADER_SIZE) / 4) as usize;
            let last = ((stop - HEADER_SIZE) / 4) as usize;
            let buf: Vec<u8> = self.entries[first..last]
                .iter()
                .flat_map(|e| e.to_le_bytes())
                .collect();
            storage.write_at(&buf, start)?;
        }
        self.dirty.clear();
        Ok(())
    }

    /// True if entries changed since the last [`Self::write_dirty`].
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }
}
