//! Consistency check and repair: count every reference to every host cluster from the header,
//! L1, L2 and refcount structures, the snapshot table and every snapshot's L1/L2 tables, then
//! compare with the stored refcounts (as `qemu-img check`), and check OFLAG_COPIED on the active
//! tables.
use super::driver::{Qcow2Driver, State, HOST_MASK};
use super::mapping::{Cluster, COMPRESSED, COPIED};
use qimg_core::{CheckReport, Error, RepairMode, Result};

/// Most host clusters a check will count (bounds the reference array to 128 MiB of u32).
const MAX_CHECK_CLUSTERS: u64 = 1 << 25;

struct Refs {
    refs: Vec<u32>,
    report: CheckReport,
    /// (is_l1, index, entry) whose COPIED flag must be recomputed.
    copied: Vec<(bool, u64, u64)>,
}

impl Refs {
    /// Count one reference to every cluster of `[off, off+len)`; false if out of range.
    fn add(&mut self, cs: u64, off: u64, len: u64, what: &str) -> bool {
        let first = off / cs;
        let last = (off + len.max(1) - 1) / cs;
        if last >= self.refs.len() as u64 {
            // Never grow the array from an on-disk value: a hostile entry could ask for GiBs.
            self.report.corruptions += 1;
            self.report.messages.push(format!(
                "ERROR {what} at offset {off:#x} is beyond the end of the image file"
            ));
            return false;
        }
        for c in first..=last {
            self.refs[c as usize] = self.refs[c as usize].saturating_add(1);
        }
        true
    }
}

impl Qcow2Driver {
    fn count_refs(&self, st: &mut State) -> Result<Refs> {
        let cs = self.cs;
        let file_size = self.storage.size()?;
        // Clusters in the file, or allocated by this driver and not written yet.
        let clusters = file_size.div_ceil(cs).max(st.rc.end_cluster);
        if clusters > MAX_CHECK_CLUSTERS {
            return Err(Error::unsupported(format!(
                "checking images of more than {MAX_CHECK_CLUSTERS} host clusters is not supported"
            )));
        }
        let mut r = Refs {
            refs: vec![0; clusters as usize],
            report: CheckReport::default(),
            copied: Vec::new(),
        };
        r.add(cs, 0, cs, "header");
        r.add(
            cs,
            st.header.l1_table_offset,
            st.l1.len() as u64 * 8,
            "L1 table",
        );
        r.add(
            cs,
            st.rc.table_offset,
            st.rc.table.len() as u64 * 8,
            "refcount table",
        );
        let blocks: Vec<u64> = st.rc.block_offsets().map(|(_, o)| o).collect();
        for o in blocks {
            if o % cs != 0 {
                r.report.corruptions += 1;
                r.report.messages.push(format!(
                    "ERROR refcount block at {o:#x} is not cluster aligned"
                ));
                continue;
            }
            r.add(cs, o, cs, "refcount block");
        }
        for (off, len, what) in self.bitmap_refs(st)? {
            r.add(cs, off, len, what);
        }
        if let Some((off, len)) = st.header.crypto_header {
            r.add(cs, off, len, "crypto header");
        }
        if st.header.nb_snapshots > 0 {
            r.add(
                cs,
                st.header.snapshots_offset,
                st.snap_table_len,
                "snapshot table",
            );
        }
        // Version 3 entries need vm_state_size_large and disk_size in their extra data.
        for (i, sn) in st.snapshots.iter().enumerate() {
            if st.header.version >= 3 && sn.extra_size < 16 {
                r.report.corruptions += 1;
                r.report
                    .messages
                    .push(format!("ERROR snapshot table entry {i} is incomplete"));
            }
        }
        let snaps: Vec<(u64, u32)> = st
            .snapshots
            .iter()
            .map(|s| (s.l1_offset, s.l1_size))
            .collect();
        for (off, n) in snaps {
            if n == 0 {
                continue;
            }
            if !r.add(cs, off, n as u64 * 8, "snapshot L1 table") {
                continue;
            }
            let mut raw = vec![0u8; n as usize * 8];
            self.storage.read_at(&mut raw, off)?;
            let l1: Vec<u64> = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            self.count_l1(st, &mut r, &l1, false)?;
        }
        let l1 = st.l1.clone();
        self.count_l1(st, &mut r, &l1, true)?;
        Ok(r)
    }

    /// Count the references of one L1 table and its L2 tables. For the active table (`active`),
    /// also queue COPIED checks and fill in the allocation statistics, as qemu-img does.
    fn count_l1(&self, st: &mut State, r: &mut Refs, l1: &[u64], active: bool) -> Result<()> {
        let cs = self.cs;
        let stride = self.l2_stride();
        let l2e = self.l2_entries();
        let guest_clusters = st.header.size.div_ceil(cs);
        let (mut allocated, mut fragmented, mut compressed) = (0u64, 0u64, 0u64);
        for (l1i, &e) in l1.iter().enumerate() {
            let l2off = e & HOST_MASK;
            if l2off == 0 {
                continue;
            }
            if !l2off.is_multiple_of(cs) {
                r.report.corruptions += 1;
                r.report.messages.push(format!(
                    "ERROR l2_offset={l2off:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
                continue;
            }
            if !r.add(cs, l2off, cs, "L2 table") {
                continue;
            }
            if active {
                r.copied.push((true, l1i as u64, e));
            }
            // Fragmentation counts within one L2 table, as qemu-img does.
            let mut next_host = 0u64;
            let entries = st.l2.get(self.storage.as_ref(), l2off, cs)?.entries.clone();
            // With extended L2 entries every other word is a subcluster bitmap; the standard
            // entry alone says which host cluster is referenced.
            for (i, &ent) in entries.iter().step_by(stride).enumerate() {
                let gc = l1i as u64 * l2e + i as u64;
                if ent & COMPRESSED != 0 {
                    let (coff, clen) = super::compress::locate(ent, self.cluster_bits);
                    r.add(cs, coff, clen, "compressed cluster");
                    // Compressed clusters count as fragmented, as qemu-img reports them.
                    allocated += 1;
                    compressed += 1;
                    fragmented += 1;
                    continue;
                }
                match super::mapping::decode_l2_in(ent, self.cluster_bits, self.data_file) {
                    Err(_) => {
                        r.report.corruptions += 1;
                        r.report.messages.push(format!("ERROR offset={:x}: Cluster is not properly aligned; L2 entry corrupted.", ent & HOST_MASK));
                    }
                    Ok(Cluster::Data { host, .. }) | Ok(Cluster::Zero(Some(host))) => {
                        if gc >= guest_clusters {
                            // Entries past the guest size still count as references, as in QEMU.
                        }
                        // Clusters of an external data file are not refcounted.
                        if !self.data_file {
                            if !r.add(cs, host, cs, "data cluster") {
                                continue;
                            }
                            if active {
                                r.copied.push((false, gc, ent));
                            }
                        }
                        allocated += 1;
                        if next_host != 0 && host != next_host {
                            fragmented += 1;
                        }
                        next_host = host + cs;
                    }
                    Ok(_) => {}
                }
            }
        }
        if active {
            r.report.total_clusters = Some(guest_clusters);
            r.report.allocated_clusters = Some(allocated);
            r.report.fragmented_clusters = Some(fragmented);
            r.report.compressed_clusters = Some(compressed);
        }
        Ok(())
    }

    /// Check, and with `mode` repair, the image (lock held). Also used to rebuild refcounts of a
    /// dirty lazy-refcounts image on open.
    pub(super) fn repair_locked(&self, st: &mut State, mode: RepairMode) -> Result<CheckReport> {
        let cs = self.cs;
        let mut r = self.count_refs(st)?;
        // Every cluster of the file (refcounts past its end are not looked at, as in QEMU).
        let span = r.refs.len() as u64;
        let mut fixes: Vec<(u64, u64)> = Vec::new();
        let mut highest = 0u64;
        for c in 0..span {
            let refs = r.refs.get(c as usize).copied().unwrap_or(0) as u64;
            let rc = st.rc.get(self.storage.as_ref(), c)?;
            if rc > 0 || refs > 0 {
                highest = c + 1;
            }
            if rc == refs {
                continue;
            }
            let leak = rc > refs;
            if leak {
                r.report
                    .messages
                    .push(format!("Leaked cluster {c} refcount={rc} reference={refs}"));
            } else {
                r.report
                    .messages
                    .push(format!("ERROR cluster {c} refcount={rc} reference={refs}"));
            }
            let fix = match mode {
                RepairMode::None => false,
                RepairMode::Leaks => leak,
                RepairMode::All => true,
            };
            if fix {
                fixes.push((c, refs));
                if leak {
                    r.report.leaks_fixed += 1;
                } else {
                    r.report.corruptions_fixed += 1;
                }
            } else if leak {
                r.report.leaks += 1;
            } else {
                r.report.corruptions += 1;
            }
        }
        // COPIED must be set exactly where the refcount is 1.
        for (is_l1, idx, ent) in std::mem::take(&mut r.copied) {
            let host = ent & HOST_MASK;
            let rc = match fixes.iter().find(|(c, _)| *c == host / cs) {
                Some((_, v)) => *v,
                None => st.rc.get(self.storage.as_ref(), host / cs)?,
            };
            let want = rc == 1;
            if (ent & COPIED != 0) == want {
                continue;
            }
            let verb = if mode == RepairMode::All {
                "Repairing"
            } else {
                "ERROR"
            };
            r.report.messages.push(if is_l1 {
                format!(
                    "{verb} OFLAG_COPIED L2 cluster: l1_index={idx} l1_entry={ent:x} refcount={rc}"
                )
            } else {
                format!("{verb} OFLAG_COPIED data cluster: l2_entry={ent:x} refcount={rc}")
            });
            if mode == RepairMode::All {
                let fixed = if want { ent | COPIED } else { ent & !COPIED };
                if is_l1 {
                    st.l1[idx as usize] = fixed;
                    st.l1_dirty = true;
                } else {
                    let l2e = self.l2_entries();
                    let l2off = st.l1[(idx / l2e) as usize] & HOST_MASK;
                    let t = st.l2.get(self.storage.as_ref(), l2off, cs)?;
                    t.entries[(idx % l2e) as usize * self.l2_stride()] = fixed;
                    t.dirty = true;
                }
                r.report.corruptions_fixed += 1;
            } else {
                r.report.corruptions += 1;
            }
        }
        if !fixes.is_empty() {
            st.rc.in_use = Some(r.refs.clone());
            st.rc.new_meta.clear();
            for (c, v) in fixes {
                if st.rc.new_meta.contains(&c) {
                    continue;
                }
                st.rc.set(self.storage.as_ref(), c, v)?;
            }
            st.rc.in_use = None;
            self.sync_reftable_header(st)?;
        }
        r.report.image_end_offset = Some(highest * cs);
        Ok(r.report)
    }
}
