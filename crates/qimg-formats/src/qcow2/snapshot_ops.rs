//! Internal snapshot operations on an open qcow2 image: create, apply (revert), delete, a
//! read-only view for `convert -l`, and copy-on-write of L2 tables shared with snapshots.
//!
//! Refcount model (QEMU's): an L2 table counts the L1 entries pointing at it, and a data cluster
//! counts the L1 tables (the active one and each snapshot's) that reach it. COPIED is set on the
//! active L1/L2 entries whose cluster has refcount 1 (so it may be written in place); compressed
//! clusters never carry it.
//!
//! Every operation runs in the order: flush pending writes → raise refcounts and write new
//! clusters (L1 copies, tables) → flush → refcount blocks → flush → L2/L1 tables → flush → header
//! switch → flush → decrements → flush → COPIED recomputed → flush. A crash leaves leaks and, in
//! two windows QEMU has too (create: refcounts raised but COPIED not yet cleared; apply/delete:
//! refcounts dropped to 1 but COPIED not yet set), COPIED flags that disagree with refcounts. Both
//! are harmless (an extra reference is a leak; a missing COPIED only costs a copy) and `check -r
//! all` repairs them; the `qcow2_snapshot` crash test checks every flush boundary.
use super::compress;
use super::driver::{Qcow2Driver, State};
use super::header::MAX_SNAPSHOTS;
use super::mapping::{decode_l1, decode_l2, Cluster, COPIED, OFFSET_MASK};
use super::snapshot::{self, Snapshot};
use crate::options::OpenOptions;
use qimg_core::{BlockDriver, Error, ErrorCode, Result, SnapshotInfo, SnapshotSelector};
use std::sync::Arc;

fn not_found() -> Error {
    Error::new(ErrorCode::NotFound, "snapshot not found")
}

impl Qcow2Driver {
    /// Copy the shared L2 table at `old` (active L1 index `l1i`) to a new cluster, point the
    /// active L1 at the copy (with COPIED) and release one reference to the old table. The data
    /// clusters keep their refcounts: the same L1 tables still reach them.
    pub(super) fn cow_l2(&self, st: &mut State, l1i: usize, old: u64) -> Result<u64> {
        self.check_host(st, old, "L2 table")?;
        let entries = st
            .l2
            .get(self.storage.as_ref(), old, self.cs)?
            .entries
            .clone();
        let off = st.rc.allocate(self.storage.as_ref(), 1)?;
        self.sync_reftable_header(st)?;
        st.l2.insert_new(off, entries.len());
        self.note_new_l2(st, off);
        st.l2.get(self.storage.as_ref(), off, self.cs)?.entries = entries;
        st.l1[l1i] = off | COPIED;
        st.l1_dirty = true;
        st.rc.free_later(old, 1);
        Ok(off)
    }

    /// Read an L1 table of `n` entries at `off`.
    fn read_l1(&self, off: u64, n: u32) -> Result<Vec<u64>> {
        let mut raw = vec![0u8; n as usize * 8];
        if n > 0 {
            self.storage.read_at(&mut raw, off)?;
        }
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    /// Write `l1` (padded with zero entries to whole clusters) into newly allocated clusters.
    fn write_new_l1(&self, st: &mut State, l1: &[u64]) -> Result<u64> {
        if l1.is_empty() {
            return Ok(0);
        }
        let clusters = (l1.len() as u64 * 8).div_ceil(self.cs);
        let off = st.rc.allocate(self.storage.as_ref(), clusters)?;
        self.sync_reftable_header(st)?;
        let mut raw: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        raw.resize((clusters * self.cs) as usize, 0);
        self.storage.write_at(&raw, off)?;
        Ok(off)
    }

    /// Add one reference (`inc`), or queue the release of one, for every cluster `l1` reaches:
    /// its L2 tables and their data clusters. Returns the L2 table offsets.
    fn adjust_refs(&self, st: &mut State, l1: &[u64], inc: bool) -> Result<Vec<u64>> {
        let cs = self.cs;
        let mut l2s = Vec::new();
        for &e in l1 {
            let l2off = decode_l1(e, self.cluster_bits)?;
            if l2off == 0 {
                continue;
            }
            self.check_host(st, l2off, "L2 table")?;
            l2s.push(l2off);
            let entries = st.l2.get(self.storage.as_ref(), l2off, cs)?.entries.clone();
            let mut hosts = vec![l2off];
            // Extended L2: every other word is a subcluster bitmap; the entry names the host.
            for ent in entries.into_iter().step_by(self.l2_stride()) {
                match decode_l2(ent, self.cluster_bits)? {
                    Cluster::Data { host, .. } | Cluster::Zero(Some(host)) => {
                        self.check_host(st, host, "Data cluster")?;
                        hosts.push(host);
                    }
                    Cluster::Compressed(entry) => {
                        let (h, len) = compress::locate(entry, self.cluster_bits);
                        self.check_host(st, h + len.max(1) - 1, "Compressed cluster")?;
                        hosts.extend((h / cs..=(h + len.max(1) - 1) / cs).map(|c| c * cs));
                    }
                    _ => {}
                }
            }
            for h in hosts {
                if inc {
                    let r = st.rc.get(self.storage.as_ref(), h / cs)?;
                    st.rc.set(self.storage.as_ref(), h / cs, r + 1)?;
                } else {
                    st.rc.free_later(h, 1);
                }
            }
            // Bounded memory: written refcounts are safe at any point (leaks at worst).
            self.maybe_shrink_cache(st)?;
        }
        Ok(l2s)
    }

    /// Set COPIED on the active L1/L2 entries whose cluster has refcount 1, clear it elsewhere.
    fn recompute_copied(&self, st: &mut State) -> Result<()> {
        let cs = self.cs;
        for i in 0..st.l1.len() {
            let e = st.l1[i];
            let l2off = e & OFFSET_MASK;
            if l2off == 0 {
                continue;
            }
            let one = st.rc.get(self.storage.as_ref(), l2off / cs)? == 1;
            let want = if one { e | COPIED } else { e & !COPIED };
            if want != e {
                st.l1[i] = want;
                st.l1_dirty = true;
            }
            let entries = st.l2.get(self.storage.as_ref(), l2off, cs)?.entries.clone();
            let mut changed = Vec::new();
            let stride = self.l2_stride();
            for (j, &ent) in entries.iter().step_by(stride).enumerate() {
                let host = match decode_l2(ent, self.cluster_bits)? {
                    Cluster::Data { host, .. } | Cluster::Zero(Some(host)) => host,
                    _ => continue,
                };
                let one = st.rc.get(self.storage.as_ref(), host / cs)? == 1;
                let want = if one { ent | COPIED } else { ent & !COPIED };
                if want != ent {
                    changed.push((j * stride, want));
                }
            }
            if !changed.is_empty() {
                let t = st.l2.get(self.storage.as_ref(), l2off, cs)?;
                for (j, w) in changed {
                    t.entries[j] = w;
                }
                t.dirty = true;
            }
            // Flushing writes refcounts before these tables, so it is safe mid-pass.
            self.maybe_shrink_cache(st)?;
        }
        Ok(())
    }

    /// Write `list` as a new snapshot table, switch the header to it, and free the old table.
    fn replace_table(&self, st: &mut State, list: Vec<Snapshot>) -> Result<()> {
        let raw = snapshot::encode_table(&list)?;
        let new_off = if list.is_empty() {
            0
        } else {
            let n = (raw.len() as u64).div_ceil(self.cs);
            let off = st.rc.allocate(self.storage.as_ref(), n)?;
            self.sync_reftable_header(st)?;
            self.storage.write_at(&raw, off)?;
            off
        };
        self.flush_locked(st)?;
        let mut hb = (list.len() as u32).to_be_bytes().to_vec();
        hb.extend_from_slice(&new_off.to_be_bytes());
        self.storage.write_at(&hb, 60)?;
        self.storage.flush()?;
        if st.header.nb_snapshots > 0 && st.snap_table_len > 0 {
            let n = st.snap_table_len.div_ceil(self.cs);
            st.rc.free_later(st.header.snapshots_offset, n);
        }
        st.header.nb_snapshots = list.len() as u32;
        st.header.snapshots_offset = new_off;
        st.snap_table_len = raw.len() as u64;
        st.snapshots = list;
        Ok(())
    }

    /// Drop cached L2 tables whose clusters were freed (they may be reused as data).
    fn forget_freed_l2(&self, st: &mut State, l2s: &[u64]) -> Result<()> {
        for &o in l2s {
            if st.rc.get(self.storage.as_ref(), o / self.cs)? == 0 {
                st.l2.remove(o);
            }
        }
        Ok(())
    }

    /// Decrements are queued: write tables, apply them, then recompute COPIED and write again.
    fn settle(&self, st: &mut State, freed_l2: &[u64]) -> Result<()> {
        self.flush_locked(st)?;
        self.recompute_copied(st)?;
        self.flush_locked(st)?;
        self.forget_freed_l2(st, freed_l2)
    }

    /// `qemu-img snapshot -c NAME` (lock held).
    pub(super) fn snapshot_create_locked(
        &self,
        st: &mut State,
        name: &str,
    ) -> Result<SnapshotInfo> {
        if st.snapshots.len() >= MAX_SNAPSHOTS as usize {
            return Err(Error::invalid("Too many snapshots"));
        }
        if name.len() > u16::MAX as usize {
            return Err(Error::invalid("Snapshot name is too long"));
        }
        self.begin_write(st)?;
        self.flush_locked(st)?;
        let l1 = st.l1.clone();
        self.adjust_refs(st, &l1, true)?;
        // Everything the active L1 reaches now has refcount >= 2: this clears every COPIED flag.
        self.recompute_copied(st)?;
        let copy: Vec<u64> = l1.iter().map(|e| e & !COPIED).collect();
        let l1_offset = self.write_new_l1(st, &copy)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let info = SnapshotInfo {
            id: snapshot::next_id(&st.snapshots),
            name: name.to_string(),
            vm_state_size: 0,
            date_sec: now.as_secs() as u32,
            // QEMU takes the time in microseconds.
            date_nsec: now.subsec_micros() * 1000,
            vm_clock_nsec: 0,
            icount: Some(0),
            disk_size: st.header.size,
        };
        let mut list = st.snapshots.clone();
        list.push(Snapshot {
            l1_offset,
            l1_size: l1.len() as u32,
            info: info.clone(),
            unknown_extra: Vec::new(),
            extra_size: 24,
        });
        self.replace_table(st, list)?;
        self.flush_locked(st)?;
        Ok(info)
    }

    fn find(&self, st: &State, sel: SnapshotSelector<'_>) -> Result<(usize, Snapshot)> {
        let infos: Vec<SnapshotInfo> = st.snapshots.iter().map(|s| s.info.clone()).collect();
        let i = sel.find(&infos).ok_or_else(not_found)?;
        Ok((i, st.snapshots[i].clone()))
    }

    /// `qemu-img snapshot -a` (lock held): the active L1 becomes a copy of the snapshot's, and
    /// the guest size becomes the snapshot's.
    pub(super) fn snapshot_apply_locked(
        &self,
        st: &mut State,
        sel: SnapshotSelector<'_>,
    ) -> Result<()> {
        let (_, sn) = self.find(st, sel)?;
        snapshot::check_covers(&sn, self.cs, self.l2_entries())?;
        self.begin_write(st)?;
        self.flush_locked(st)?;
        let sn_l1 = self.read_l1(sn.l1_offset, sn.l1_size)?;
        self.adjust_refs(st, &sn_l1, true)?;
        let new_l1: Vec<u64> = sn_l1.iter().map(|e| e & !COPIED).collect();
        let l1_offset = self.write_new_l1(st, &new_l1)?;
        self.flush_locked(st)?;
        // One write: size (24), crypt_method (32), l1_size (36), l1_table_offset (40).
        let mut hb = sn.info.disk_size.to_be_bytes().to_vec();
        hb.extend_from_slice(&st.header.crypt_method.to_be_bytes());
        hb.extend_from_slice(&(new_l1.len() as u32).to_be_bytes());
        hb.extend_from_slice(&l1_offset.to_be_bytes());
        self.storage.write_at(&hb, 24)?;
        self.storage.flush()?;
        let old_off = st.header.l1_table_offset;
        let old_l1 = std::mem::replace(&mut st.l1, new_l1);
        st.header.size = sn.info.disk_size;
        st.header.l1_size = st.l1.len() as u32;
        st.header.l1_table_offset = l1_offset;
        let freed = self.adjust_refs(st, &old_l1, false)?;
        if old_off != 0 && !old_l1.is_empty() {
            st.rc
                .free_later(old_off, (old_l1.len() as u64 * 8).div_ceil(self.cs));
        }
        self.settle(st, &freed)
    }

    /// `qemu-img snapshot -d` (lock held).
    pub(super) fn snapshot_delete_locked(
        &self,
        st: &mut State,
        sel: SnapshotSelector<'_>,
    ) -> Result<()> {
        let (idx, sn) = self.find(st, sel)?;
        self.begin_write(st)?;
        self.flush_locked(st)?;
        let sn_l1 = self.read_l1(sn.l1_offset, sn.l1_size)?;
        let mut list = st.snapshots.clone();
        list.remove(idx);
        self.replace_table(st, list)?;
        let freed = self.adjust_refs(st, &sn_l1, false)?;
        if sn.l1_size > 0 {
            st.rc
                .free_later(sn.l1_offset, (sn.l1_size as u64 * 8).div_ceil(self.cs));
        }
        self.settle(st, &freed)
    }

    /// A read-only driver over the same file showing the selected snapshot (`convert -l`).
    pub(super) fn snapshot_view_of(
        &self,
        sel: SnapshotSelector<'_>,
    ) -> Result<Arc<dyn BlockDriver>> {
        let sn = {
            let mut st = self.lock()?;
            self.flush_locked(&mut st)?;
            self.find(&st, sel)?.1
        };
        snapshot::check_covers(&sn, self.cs, self.l2_entries())?;
        let l1 = self.read_l1(sn.l1_offset, sn.l1_size)?;
        let mut view = Qcow2Driver::open(
            self.storage.clone(),
            &OpenOptions {
                read_only: true,
                metadata_only: true,
                ..Default::default()
            },
        )?;
        // The view decrypts with this image's cipher (opened without the key above).
        view.cipher = self.cipher.clone();
        {
            let mut vs = view.lock()?;
            vs.header.size = sn.info.disk_size;
            vs.header.l1_size = l1.len() as u32;
            vs.l1 = l1;
        }
        view.set_backing(self.backing())?;
        Ok(Arc::new(view))
    }
}
