//! The `qemu-img bitmap` actions, reading a bitmap's bits, write tracking on writable opens, and
//! the host ranges bitmaps reference (for check).
use super::dir::{self, DirEntry, FLAG_AUTO, GRANULARITY_BITS, MAX_BITMAPS, MAX_NAME};
use super::{table, Bitmap, Bitmaps};
use crate::qcow2::driver::{Qcow2Driver, State};
use crate::qcow2::header::AUTOCLEAR_BITMAPS;
use qimg_core::{BitmapAction, BitmapData, Error, ErrorCode, Result};

fn not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("Dirty bitmap '{name}' not found"),
    )
}

fn inconsistent(name: &str) -> Error {
    Error::invalid(format!(
        "Bitmap '{name}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk"
    ))
}

impl Qcow2Driver {
    /// Load the bits of bitmap `i` (if not loaded yet).
    fn load_bits(&self, st: &mut State, i: usize) -> Result<()> {
        let size = st.header.size;
        let file_size = self.storage.size()?;
        let Some(bm) = st.bitmaps.as_mut() else {
            return Ok(());
        };
        if bm.list[i].data.is_some() {
            return Ok(());
        }
        // Many bitmaps may share one table on a hostile image: bound the total, not just each.
        let loaded: u64 = bm
            .list
            .iter()
            .filter_map(|b| b.data.as_ref())
            .map(|d| d.bits.len() as u64)
            .sum();
        let want = size
            .div_ceil(1 << bm.list[i].entry.granularity_bits)
            .div_ceil(8);
        if loaded + want > table::MAX_TOTAL_LOADED_BYTES {
            return Err(Error::unsupported(format!(
                "Bitmaps of more than {} bytes in total are not supported",
                table::MAX_TOTAL_LOADED_BYTES
            )));
        }
        let b = &mut bm.list[i];
        let e = &b.entry;
        let t = table::load_table(
            self.storage.as_ref(),
            e.table_offset,
            e.table_size,
            self.cs,
            file_size,
        )?;
        let d = table::load_data(
            self.storage.as_ref(),
            &t,
            1 << e.granularity_bits,
            size,
            self.cs,
        )?;
        b.data = Some(d);
        Ok(())
    }

    /// Index of a usable (consistent) bitmap named `name`, its bits loaded.
    fn usable(&self, st: &mut State, name: &str) -> Result<usize> {
        let i = find(st, name).ok_or_else(|| not_found(name))?;
        if st.bitmaps.as_ref().is_some_and(|b| b.list[i].inconsistent) {
            return Err(inconsistent(name));
        }
        self.load_bits(st, i)?;
        Ok(i)
    }

    /// On a writable open: drop autoclear bits qimg does not maintain, and start tracking
    /// writes in the enabled bitmaps (marking them in use on disk).
    pub(in crate::qcow2) fn bitmaps_open_writable(&self, st: &mut State) -> Result<()> {
        if st.header.version < 3 {
            return Ok(());
        }
        let has = st.bitmaps.as_ref().is_some_and(|b| b.dir.is_some());
        // The raw-data-file bit is maintained too: writes keep a raw data file the guest disk.
        let keep = (if has { AUTOCLEAR_BITMAPS } else { 0 })
            | (st.header.autoclear & crate::qcow2::header::AUTOCLEAR_DATA_FILE_RAW);
        if st.header.autoclear & !keep != 0 {
            st.header.autoclear &= keep;
            self.write_header_field(st, 88, &st.header.autoclear.to_be_bytes())?;
            self.storage.flush()?;
        }
        let n = st.bitmaps.as_ref().map_or(0, |b| b.list.len());
        let mut any = false;
        for i in 0..n {
            let b = &st.bitmaps.as_ref().map(|b| &b.list[i]);
            if b.is_some_and(|b| b.entry.auto() && !b.inconsistent) {
                self.load_bits(st, i)?;
                any = true;
            }
        }
        if any {
            if let Some(bm) = st.bitmaps.as_mut() {
                bm.tracking = true;
            }
            self.store_bitmaps(st, false)?;
        }
        Ok(())
    }

    /// Apply `qemu-img bitmap` actions in order, then store (what succeeded is stored even
    /// when a later action fails, as with qemu-img).
    pub(in crate::qcow2) fn bitmaps_apply(
        &self,
        st: &mut State,
        actions: &[BitmapAction],
    ) -> Result<()> {
        if self.read_only() {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                "the image is opened read-only",
            ));
        }
        let mut result = Ok(());
        for a in actions {
            result = self.apply_one(st, a);
            if result.is_err() {
                break;
            }
        }
        self.store_bitmaps(st, false)?;
        result
    }

    fn apply_one(&self, st: &mut State, a: &BitmapAction) -> Result<()> {
        let size = st.header.size;
        match a {
            BitmapAction::Add { name, granularity } => {
                if st.header.version < 3 {
                    return Err(Error::unsupported(format!(
                        "Can't make bitmap '{name}' persistent: Cannot store dirty bitmaps in qcow2 v2 files"
                    )));
                }
                let g = granularity.unwrap_or(self.cs.clamp(4096, 65536));
                let bits = g.trailing_zeros() as u8;
                if !g.is_power_of_two() || !GRANULARITY_BITS.contains(&bits) {
                    return Err(Error::invalid(
                        "Granularity must be power of 2 and at least 512",
                    ));
                }
                if find(st, name).is_some() {
                    return Err(Error::invalid(format!("Bitmap already exists: {name}")));
                }
                if name.len() > MAX_NAME {
                    return Err(Error::invalid(format!(
                        "Can't make bitmap '{name}' persistent: name length exceeds {MAX_NAME} bytes"
                    )));
                }
                let bm = st.bitmaps.get_or_insert_with(Bitmaps::default);
                if bm.list.len() >= MAX_BITMAPS as usize {
                    return Err(Error::invalid(format!(
                        "Can't make bitmap '{name}' persistent: the image already has {MAX_BITMAPS} bitmaps"
                    )));
                }
                let entry = DirEntry {
                    table_offset: 0,
                    table_size: dir::table_entries(size, bits, self.cs) as u32,
                    flags: FLAG_AUTO,
                    granularity_bits: bits,
                    name: name.as_bytes().to_vec(),
                    extra: Vec::new(),
                };
                bm.list.push(Bitmap {
                    entry,
                    data: Some(BitmapData::new(g, size)),
                    changed: true,
                    inconsistent: false,
                });
                bm.meta_dirty = true;
            }
            BitmapAction::Remove(name) => {
                let i = find(st, name).ok_or_else(|| not_found(name))?;
                let (off, n) = st
                    .bitmaps
                    .as_ref()
                    .map(|b| (b.list[i].entry.table_offset, b.list[i].entry.table_size))
                    .unwrap_or_default();
                self.free_table(st, off, n)?;
                if let Some(bm) = st.bitmaps.as_mut() {
                    bm.list.remove(i);
                    bm.meta_dirty = true;
                }
            }
            BitmapAction::Clear(name) => {
                let i = self.usable(st, name)?;
                if let Some(b) = st.bitmaps.as_mut().map(|b| &mut b.list[i]) {
                    if let Some(d) = b.data.as_mut() {
                        d.bits.fill(0);
                    }
                    b.changed = true;
                }
            }
            BitmapAction::Enable(name) | BitmapAction::Disable(name) => {
                let i = self.usable(st, name)?;
                if let Some(bm) = st.bitmaps.as_mut() {
                    let f = &mut bm.list[i].entry.flags;
                    if matches!(a, BitmapAction::Enable(_)) {
                        *f |= FLAG_AUTO;
                    } else {
                        *f &= !FLAG_AUTO;
                    }
                    bm.meta_dirty = true;
                }
            }
            BitmapAction::Merge { name, source } => {
                let i = self.usable(st, name)?;
                if source.size != size {
                    return Err(Error::invalid(format!(
                        "Bitmaps are incompatible and can't be merged (guest sizes {} and {size})",
                        source.size
                    )));
                }
                if let Some(b) = st.bitmaps.as_mut().map(|b| &mut b.list[i]) {
                    if let Some(d) = b.data.as_mut() {
                        for (o, l) in source.ranges() {
                            d.mark(o, l);
                        }
                    }
                    b.changed = true;
                }
            }
        }
        Ok(())
    }

    /// Before a resize: every bitmap must be usable (QEMU refuses inconsistent ones); load all.
    pub(in crate::qcow2) fn bitmaps_before_resize(&self, st: &mut State) -> Result<()> {
        let names: Vec<String> = st
            .bitmaps
            .as_ref()
            .map(|b| b.list.iter().map(|b| b.entry.name_str()).collect())
            .unwrap_or_default();
        for n in names {
            self.usable(st, &n)?;
        }
        Ok(())
    }

    /// After a resize: bitmaps cover the new size (new bits clear, as QEMU) and are stored.
    pub(in crate::qcow2) fn bitmaps_after_resize(&self, st: &mut State, size: u64) -> Result<()> {
        let Some(bm) = st.bitmaps.as_mut() else {
            return Ok(());
        };
        for b in &mut bm.list {
            if let Some(d) = b.data.as_mut() {
                d.size = size;
                d.bits
                    .resize(size.div_ceil(d.granularity).div_ceil(8) as usize, 0);
                b.changed = true;
            }
        }
        self.store_bitmaps(st, false)
    }

    /// The bits of bitmap `name` (refused if inconsistent).
    pub(in crate::qcow2) fn bitmaps_read(&self, st: &mut State, name: &str) -> Result<BitmapData> {
        let i = self.usable(st, name)?;
        st.bitmaps
            .as_ref()
            .and_then(|b| b.list[i].data.clone())
            .ok_or_else(|| not_found(name))
    }

    /// Host ranges the stored bitmaps reference: (offset, length, what).
    pub(in crate::qcow2) fn bitmap_refs(
        &self,
        st: &State,
    ) -> Result<Vec<(u64, u64, &'static str)>> {
        let mut out = Vec::new();
        let Some(bm) = st.bitmaps.as_ref() else {
            return Ok(out);
        };
        if let Some((off, size)) = bm.dir {
            out.push((off, size, "bitmap directory"));
        }
        let file_size = self.storage.size()?;
        for b in &bm.list {
            let e = &b.entry;
            if e.table_offset == 0 {
                continue;
            }
            out.push((e.table_offset, e.table_size as u64 * 8, "bitmap table"));
            let t = table::load_table(
                self.storage.as_ref(),
                e.table_offset,
                e.table_size,
                self.cs,
                file_size,
            )?;
            out.extend(table::data_clusters(&t).map(|o| (o, self.cs, "bitmap data")));
        }
        Ok(out)
    }
}

fn find(st: &State, name: &str) -> Option<usize> {
    st.bitmaps
        .as_ref()?
        .list
        .iter()
        .position(|b| b.entry.name == name.as_bytes())
}
