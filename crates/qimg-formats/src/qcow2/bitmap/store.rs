//! Storing bitmaps: new tables and data clusters for changed bitmaps, a new directory, the
//! header (bitmaps extension and autoclear bit) rewritten, and only then the old space freed.
//!
//! Order: bitmap data and tables → directory → flush → refcounts → flush → header → flush →
//! frees, so a crash leaves either the old bitmaps or the new ones referenced (and at worst
//! leaked clusters).
use super::dir::{self, BitmapsExt, FLAG_AUTO, FLAG_EXTRA_DATA_COMPATIBLE, FLAG_IN_USE};
use super::table;
use crate::qcow2::driver::{Qcow2Driver, State};
use crate::qcow2::header::{AUTOCLEAR_BITMAPS, EXT_BITMAPS};
use crate::qcow2::header_write::BackingName;
use qimg_core::Result;

impl Qcow2Driver {
    /// Write `bytes` at newly allocated clusters (padded to whole clusters); returns the offset.
    fn write_new(&self, st: &mut State, bytes: &[u8]) -> Result<u64> {
        let n = (bytes.len() as u64).div_ceil(self.cs).max(1);
        let off = st.rc.allocate(self.storage.as_ref(), n)?;
        self.sync_reftable_header(st)?;
        let mut buf = bytes.to_vec();
        buf.resize((n * self.cs) as usize, 0);
        self.storage.write_at(&buf, off)?;
        Ok(off)
    }

    /// Queue the table and data clusters of a stored bitmap table for freeing.
    pub(super) fn free_table(&self, st: &mut State, offset: u64, entries: u32) -> Result<()> {
        if offset == 0 {
            return Ok(());
        }
        let file_size = self.storage.size()?;
        let t = table::load_table(self.storage.as_ref(), offset, entries, self.cs, file_size)?;
        let bm = st.bitmaps.get_or_insert_with(Default::default);
        bm.frees.extend(table::data_clusters(&t).map(|o| (o, 1)));
        bm.frees
            .push((offset, (entries as u64 * 8).div_ceil(self.cs)));
        Ok(())
    }

    /// The flags a bitmap is stored with.
    fn stored_flags(flags: u32, inconsistent: bool, tracking: bool) -> u32 {
        let mut f = flags & (FLAG_AUTO | FLAG_EXTRA_DATA_COMPATIBLE);
        if inconsistent || (tracking && f & FLAG_AUTO != 0) {
            f |= FLAG_IN_USE;
        }
        f
    }

    /// Store every bitmap whose bits or entry changed; with `closing`, stop tracking and clear
    /// the in-use flags this open set.
    pub(in crate::qcow2) fn store_bitmaps(&self, st: &mut State, closing: bool) -> Result<()> {
        if self.read_only() {
            return Ok(());
        }
        let Some(mut bm) = st.bitmaps.take() else {
            return Ok(());
        };
        let r = self.store_inner(st, &mut bm, closing);
        st.bitmaps = Some(bm);
        r
    }

    fn store_inner(&self, st: &mut State, bm: &mut super::Bitmaps, closing: bool) -> Result<()> {
        let cs = self.cs;
        let tracking = bm.tracking && !closing;
        let changed = bm.list.iter().any(|b| b.changed);
        let flags_changed = bm
            .list
            .iter()
            .any(|b| Self::stored_flags(b.entry.flags, b.inconsistent, tracking) != b.entry.flags);
        bm.tracking = tracking;
        if !changed && !bm.meta_dirty && bm.frees.is_empty() {
            if flags_changed {
                // Same layout, other flags: rewrite the directory where it is.
                for b in &mut bm.list {
                    b.entry.flags = Self::stored_flags(b.entry.flags, b.inconsistent, tracking);
                }
                let raw = dir::encode_directory(
                    &bm.list.iter().map(|b| b.entry.clone()).collect::<Vec<_>>(),
                );
                if let Some((off, size)) = bm.dir {
                    if size == raw.len() as u64 {
                        self.storage.write_at(&raw, off)?;
                        self.storage.flush()?;
                        return Ok(());
                    }
                }
                bm.meta_dirty = true;
            } else {
                return Ok(());
            }
        }
        let mut frees = std::mem::take(&mut bm.frees);
        for b in &mut bm.list {
            if !b.changed {
                continue;
            }
            let Some(data) = b.data.as_ref() else {
                continue;
            };
            let mut entries = Vec::new();
            for chunk in data.bits.chunks(cs as usize) {
                if chunk.iter().all(|&x| x == 0) {
                    entries.push(0u64);
                } else {
                    entries.push(self.write_new(st, chunk)?);
                }
            }
            let need = dir::table_entries(data.size, b.entry.granularity_bits, cs) as usize;
            entries.resize(need.max(1), 0);
            let raw: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
            let toff = self.write_new(st, &raw)?;
            if b.entry.table_offset != 0 {
                let old = table::load_table(
                    self.storage.as_ref(),
                    b.entry.table_offset,
                    b.entry.table_size,
                    cs,
                    self.storage.size()?,
                )?;
                frees.extend(table::data_clusters(&old).map(|o| (o, 1)));
                frees.push((
                    b.entry.table_offset,
                    (b.entry.table_size as u64 * 8).div_ceil(cs),
                ));
            }
            b.entry.table_offset = toff;
            b.entry.table_size = entries.len() as u32;
            b.changed = false;
        }
        for b in &mut bm.list {
            b.entry.flags = Self::stored_flags(b.entry.flags, b.inconsistent, tracking);
        }
        let entries: Vec<_> = bm.list.iter().map(|b| b.entry.clone()).collect();
        let ext = if entries.is_empty() {
            None
        } else {
            let raw = dir::encode_directory(&entries);
            let off = self.write_new(st, &raw)?;
            Some(BitmapsExt {
                nb_bitmaps: entries.len() as u32,
                dir_size: raw.len() as u64,
                dir_offset: off,
            })
        };
        // New data, tables and directory, then their refcounts, must be durable before the
        // header points at them.
        self.flush_locked(st)?;
        self.rewrite_header(st, ext)?;
        if let Some((off, size)) = bm.dir {
            frees.push((off, size.div_ceil(cs)));
        }
        bm.dir = ext.map(|e| (e.dir_offset, e.dir_size));
        bm.meta_dirty = false;
        for (off, n) in frees {
            st.rc.free_later(off, n);
        }
        self.flush_locked(st)
    }

    /// Rewrite the header cluster's extensions with `ext` as the bitmaps extension (or none),
    /// the autoclear bit to match; the backing file name moves after the extensions.
    fn rewrite_header(&self, st: &mut State, ext: Option<BitmapsExt>) -> Result<()> {
        let mut autoclear = st.header.autoclear & !AUTOCLEAR_BITMAPS;
        if ext.is_some() {
            autoclear |= AUTOCLEAR_BITMAPS;
        }
        let body = ext.map(|e| e.encode());
        let (backing_off, _) = self.rewrite_header_cluster(
            st,
            &[(EXT_BITMAPS, body.as_ref().map(|b| &b[..]))],
            BackingName::Keep,
            |out| out[88..96].copy_from_slice(&autoclear.to_be_bytes()),
        )?;
        let h = &mut st.header;
        h.autoclear = autoclear;
        h.backing_file_offset = backing_off;
        h.bitmaps_ext = ext.map(|e| e.encode().to_vec());
        Ok(())
    }
}
