//! Block allocation and crash-safe metadata updates.
//!
//! New payload blocks go at the end of the file (1 MiB aligned), and their data is written
//! before the BAT names them. BAT changes collect in memory and reach the file on flush, always
//! through the log, as the spec asks:
//!
//! 1. flush the data;
//! 2. write the non-current header with a fresh `log_guid` (headers alternate, each checksummed,
//!    so a torn header write leaves the other one current);
//! 3. write one log entry journalling the changed 4 KiB BAT sectors, flush;
//! 4. write those sectors in place, flush;
//! 5. write the other header with a zero `log_guid` (the log is empty again).
//!
//! A crash before 3 completes leaves no valid entry (nothing to replay: the old BAT stands); a
//! crash after it replays the entry on the next open (the new BAT). Either way the image opens and
//! checks clean.
use super::header::{VhdxHeader, HEADER_OFFSETS};
use super::log::{encode_entry, max_sectors, SECTOR};
use super::mapping::Bat;
use super::{Guid, MIB};
use qimg_core::{Result, Storage};
use std::collections::BTreeSet;

/// Header and log bookkeeping of a writable open.
#[derive(Debug)]
pub struct MetaState {
    /// The current header.
    pub header: VhdxHeader,
    /// Its slot (0 or 1).
    pub slot: usize,
    /// This session's file write GUID.
    pub session: Guid,
    /// Set once the headers carry this session's GUIDs.
    pub session_started: bool,
    /// The BAT region's file offset.
    pub bat_offset: u64,
    /// BAT sectors (index of the 4 KiB sector in the region) changed since the last flush.
    pub dirty: BTreeSet<u64>,
    /// Next log sequence number.
    pub next_seq: u64,
}

impl MetaState {
    /// Write the non-current header slot with sequence + 1, this session's file write GUID, a new
    /// data write GUID if asked, and `log_guid`; flush; it becomes current.
    pub fn update_header(
        &mut self,
        s: &dyn Storage,
        new_data_guid: bool,
        log_guid: Guid,
    ) -> Result<()> {
        let mut h = self.header.clone();
        h.sequence_number = h.sequence_number.wrapping_add(1);
        h.file_write_guid = self.session;
        if new_data_guid {
            h.data_write_guid = Guid::random();
        }
        h.log_guid = log_guid;
        let slot = 1 - self.slot;
        s.write_at(&h.encode(), HEADER_OFFSETS[slot])?;
        s.flush()?;
        self.header = h;
        self.slot = slot;
        Ok(())
    }

    /// Before the first write of a session: both headers get this session's file write GUID and
    /// a new data write GUID (QEMU's `vhdx_user_visible_write`).
    pub fn start_session(&mut self, s: &dyn Storage) -> Result<()> {
        if !self.session_started {
            let lg = self.header.log_guid;
            self.update_header(s, true, lg)?;
            self.update_header(s, false, lg)?;
            self.session_started = true;
        }
        Ok(())
    }

    /// Note that BAT entry `index` changed.
    pub fn mark(&mut self, index: usize) {
        self.dirty.insert(index as u64 * 8 / SECTOR);
    }

    /// Write the changed BAT sectors through the log (see the module comment).
    pub fn commit(&mut self, s: &dyn Storage, bat: &Bat) -> Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        self.start_session(s)?;
        s.flush()?;
        let guid = Guid::random();
        self.update_header(s, false, guid)?;
        let sectors: Vec<u64> = std::mem::take(&mut self.dirty).into_iter().collect();
        let per_entry = max_sectors(self.header.log_length as u64).max(1) as usize;
        for chunk in sectors.chunks(per_entry) {
            let bufs: Vec<(u64, Vec<u8>)> = chunk
                .iter()
                .map(|&sec| (self.bat_offset + sec * SECTOR, bat_sector(bat, sec)))
                .collect();
            let file_end = s.size()?;
            let refs: Vec<(u64, &[u8])> = bufs.iter().map(|(o, b)| (*o, b.as_slice())).collect();
            let entry = encode_entry(self.next_seq, guid, 0, file_end, file_end, &refs);
            self.next_seq += 1;
            s.write_at(&entry, self.header.log_offset)?;
            s.flush()?;
            for (o, b) in &bufs {
                s.write_at(b, *o)?;
            }
            s.flush()?;
        }
        self.update_header(s, false, Guid::default())
    }
}

/// The 4 KiB BAT sector `sec` as stored (entries past the table are zero).
pub fn bat_sector(bat: &Bat, sec: u64) -> Vec<u8> {
    let mut b = vec![0u8; SECTOR as usize];
    let per = (SECTOR / 8) as usize;
    let first = sec as usize * per;
    for (i, e) in bat.entries.iter().skip(first).take(per).enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&e.to_le_bytes());
    }
    b
}

/// Reserve a new payload block of `block_size` at the 1 MiB-aligned end of the file; returns
/// its offset. The new space reads as zeros.
pub fn allocate_block(s: &dyn Storage, block_size: u64) -> Result<u64> {
    let at = s.size()?.next_multiple_of(MIB);
    s.truncate(at + block_size)?;
    Ok(at)
}
