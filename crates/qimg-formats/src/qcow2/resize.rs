//! qcow2 resize beyond plain growth: shrinking (drop the clusters past the new end, clear the L1
//! entries past it, truncate the file after its last used cluster, as QEMU's `qcow2_co_truncate`)
//! and growing with `preallocation=metadata|falloc|full` for the new area.
//!
//! Ordering: the image is flushed first; cleared L2/L1 entries reach the disk before the clusters
//! they referenced are freed (the driver's flush sequence), and the file is truncated only after
//! the frees are durable, so a crash leaks clusters at worst. The header's `l1_size` is left as
//! it is (QEMU does the same; a larger L1 than the size needs is valid).
use super::driver::{Qcow2Driver, State};
use super::mapping::{decode_l1, Cluster, COPIED};
use crate::options::Preallocation;
use qimg_core::{Error, Result, Storage};

/// Write real zero bytes over `[offset, offset+len)` (`preallocation=full`: the space ends up
/// allocated and reported as data, as QEMU's full preallocation leaves it).
pub(crate) fn write_zero_bytes(storage: &dyn Storage, offset: u64, len: u64) -> Result<()> {
    let z = vec![0u8; (1u64 << 20).min(len) as usize];
    let mut p = 0;
    while p < len {
        let k = (z.len() as u64).min(len - p);
        storage.write_at(&z[..k as usize], offset + p)?;
        p += k;
    }
    Ok(())
}

impl Qcow2Driver {
    /// Shrink the image to `new_size` (lock held, writes begun).
    pub(super) fn shrink_locked(&self, st: &mut State, new_size: u64) -> Result<()> {
        if st.header.nb_snapshots > 0 && st.header.version < 3 {
            return Err(Error::unsupported(
                "Can't resize a v2 image which has snapshots",
            ));
        }
        let cs = self.cs;
        let per_l2 = self.l2_entries();
        self.flush_locked(st)?;
        let first_gone = new_size.div_ceil(cs);
        let keep_l1 = new_size.div_ceil(cs * per_l2) as usize;
        let mut dropped_tables = Vec::new();
        for i in (first_gone / per_l2) as usize..st.l1.len() {
            if decode_l1(st.l1[i], self.cluster_bits)? == 0 {
                continue;
            }
            let start = (i as u64 * per_l2).max(first_gone);
            for gc in start..(i as u64 + 1) * per_l2 {
                let old = self.lookup(st, gc)?;
                if matches!(old, Cluster::Unallocated) {
                    continue;
                }
                self.free_cluster_of(st, old);
                self.set_l2_pub(st, gc, 0)?;
            }
            if i >= keep_l1 {
                // A table shared with a snapshot was copied by the first cleared entry (if any):
                // drop this image's reference to whichever table its L1 entry names now.
                let cur = decode_l1(st.l1[i], self.cluster_bits)?;
                st.l1[i] = 0;
                st.l1_dirty = true;
                st.rc.free_later(cur, 1);
                dropped_tables.push(cur);
            }
        }
        // Cleared entries first, then the frees (flush_locked's order).
        self.flush_locked(st)?;
        for off in dropped_tables {
            st.l2.remove(off);
        }
        // Refcount blocks left describing only free clusters go too, then the file's tail.
        for b in 0..st.rc.table.len() as u64 {
            st.rc.drop_unused_block(self.storage.as_ref(), b)?;
        }
        self.flush_locked(st)?;
        self.truncate_tail(st)?;
        self.set_size(st, new_size)
    }

    /// Truncate the file after its last cluster with a non-zero refcount (QEMU's
    /// `qcow2_get_last_cluster` then `bdrv_co_truncate`), when that makes it shorter.
    fn truncate_tail(&self, st: &mut State) -> Result<()> {
        let cs = self.cs;
        let file_size = self.storage.size()?;
        let mut last = file_size.div_ceil(cs);
        while last > 0 && st.rc.get(self.storage.as_ref(), last - 1)? == 0 {
            last -= 1;
        }
        if last * cs < file_size {
            self.storage.truncate(last * cs)?;
            self.storage.flush()?;
            st.rc.end_cluster = last;
        }
        Ok(())
    }

    /// Write the new guest size into the header, durably.
    pub(super) fn set_size(&self, st: &mut State, new_size: u64) -> Result<()> {
        self.storage.write_at(&new_size.to_be_bytes(), 24)?;
        self.storage.flush()?;
        st.header.size = new_size;
        Ok(())
    }

    /// Allocate every cluster of `[old_size, new_size)` not yet allocated (their L2 tables too),
    /// then make the new data area as `mode` asks (metadata: sparse, falloc: reserved, full:
    /// written zeros). Lock held; the image already has its new size.
    pub(super) fn preallocate_grown(
        &self,
        st: &mut State,
        old_size: u64,
        new_size: u64,
        mode: Preallocation,
    ) -> Result<()> {
        let cs = self.cs;
        let per_l2 = self.l2_entries();
        let end = new_size.div_ceil(cs);
        let mut gc = old_size / cs;
        let mut runs = Vec::new();
        while gc < end {
            if !matches!(self.lookup(st, gc)?, Cluster::Unallocated) {
                gc += 1;
                continue;
            }
            let mut n = 1;
            let limit = (per_l2 - gc % per_l2).min(end - gc).min(st.rc.max_run());
            while n < limit && matches!(self.lookup(st, gc + n)?, Cluster::Unallocated) {
                n += 1;
            }
            let host = self.alloc_for_prealloc(st, gc, n)?;
            for k in 0..n {
                self.set_l2_pub(st, gc + k, (host + k * cs) | COPIED)?;
            }
            runs.push((host, n * cs));
            gc += n;
        }
        for (host, len) in runs {
            match mode {
                Preallocation::Off => {}
                Preallocation::Metadata => {
                    if self.storage.size()? < host + len {
                        self.storage.truncate(host + len)?;
                    }
                }
                Preallocation::Falloc => self.storage.allocate(host, len)?,
                Preallocation::Full => {
                    self.storage.allocate(host, len)?;
                    write_zero_bytes(self.storage.as_ref(), host, len)?;
                }
            }
        }
        self.flush_locked(st)
    }
}
