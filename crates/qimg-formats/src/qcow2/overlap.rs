//! Metadata overlap checks: a guest data write must never land on a cluster that holds
//! metadata (a hostile or corrupted mapping could point there). As QEMU's default "cached"
//! checks: the header cluster, the active L1 table and its L2 tables, the refcount table and
//! blocks, the snapshot table and snapshot L1 tables, and the bitmap directory. A write that would
//! overlap marks the image corrupt (incompatible bit 1, as QEMU does) and fails with
//! `ERR_QIMG_CORRUPT`, so nothing is overwritten and later writable opens are refused.
//!
//! The set of metadata clusters is built when first needed, extended when an L2 table is
//! allocated, and rebuilt after frees are applied (a freed table may become a data cluster).
use super::driver::{Qcow2Driver, State};
use super::header;
use super::mapping::decode_l1;
use qimg_core::{Error, Result};
use std::collections::HashMap;

/// Metadata cluster index → what it holds.
pub(super) type MetadataClusters = HashMap<u64, &'static str>;

impl Qcow2Driver {
    /// Every metadata cluster of the image, by cluster index.
    fn metadata_clusters(&self, st: &State) -> Result<MetadataClusters> {
        let cs = self.cs;
        let mut m = MetadataClusters::new();
        let mut range = |off: u64, len: u64, what: &'static str| {
            if len > 0 {
                for c in off / cs..=(off + len - 1) / cs {
                    m.entry(c).or_insert(what);
                }
            }
        };
        range(0, cs, "qcow2 header");
        range(
            st.header.l1_table_offset,
            st.header.l1_size as u64 * 8,
            "active L1 table",
        );
        range(
            st.header.refcount_table_offset,
            st.header.refcount_table_clusters as u64 * cs,
            "refcount table",
        );
        for (_, off) in st.rc.block_offsets() {
            range(off, cs, "refcount block");
        }
        if st.header.nb_snapshots > 0 {
            range(
                st.header.snapshots_offset,
                st.snap_table_len,
                "snapshot table",
            );
        }
        for s in &st.snapshots {
            range(s.l1_offset, s.l1_size as u64 * 8, "inactive L1 table");
        }
        if let Some((off, size)) = st.bitmaps.as_ref().and_then(|b| b.dir) {
            range(off, size, "bitmap directory");
        }
        if let Some((off, size)) = st.header.crypto_header {
            range(off, size, "crypto header");
        }
        for &e in &st.l1 {
            let l2 = decode_l1(e, self.cluster_bits)?;
            if l2 != 0 {
                range(l2, cs, "active L2 table");
            }
        }
        Ok(m)
    }

    /// Refuse a guest data write to host `[host, host+len)` that overlaps metadata: mark the
    /// image corrupt and fail. Images with an external data file write data elsewhere.
    pub(super) fn check_overlap(&self, st: &mut State, host: u64, len: u64) -> Result<()> {
        if self.data_file || len == 0 {
            return Ok(());
        }
        if st.overlap.is_none() {
            st.overlap = Some(self.metadata_clusters(st)?);
        }
        let cs = self.cs;
        let hit = st.overlap.as_ref().and_then(|m| {
            (host / cs..=(host + len - 1) / cs).find_map(|c| m.get(&c).map(|w| (c, *w)))
        });
        let Some((c, what)) = hit else {
            return Ok(());
        };
        if st.header.version >= 3 {
            // Version 2 has no field for it: the write just fails, as in QEMU.
            st.header.incompatible |= header::INCOMPAT_CORRUPT;
            self.write_header_field(st, 72, &st.header.incompatible.to_be_bytes())?;
            self.storage.flush()?;
        }
        Err(Error::corrupt(format!(
            "Marking image as corrupt: Preventing invalid write on metadata (overlaps with {what}); \
             cluster {:#x}",
            c * cs
        ))
        .with_offset(c * cs)
        .with_path(self.storage.name()))
    }

    /// A new L2 table at `off` is metadata from now on.
    pub(super) fn note_new_l2(&self, st: &mut State, off: u64) {
        if let Some(m) = st.overlap.as_mut() {
            m.insert(off / self.cs, "active L2 table");
        }
    }
}
