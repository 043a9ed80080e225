//! `qemu-img amend` for qcow2: compat 0.10 ↔ 1.1, lazy_refcounts on/off, refcount_bits changes.
//!
//! The steps run in QEMU's order: upgrade, refcount width, lazy refcounts, downgrade. Options are
//! validated (with qemu-img's messages) in TypeScript; this module does the on-disk work:
//!
//! - the header cluster is rewritten in one write (fixed fields, backing-format and feature-table
//!   extensions regenerated, other extensions kept verbatim, then the backing file name);
//! - a downgrade first turns every zero cluster into something version 2 can hold (unallocated
//!   without a backing file, else a cluster of written zeros; a preallocated zero cluster has its
//!   host cluster zeroed), durably, before the header says version 2;
//! - a refcount width change writes a complete new refcount table and blocks past the end of the
//!   file (counting themselves), flushes, switches the header to them in one write, flushes, and
//!   only then frees the old table and blocks through the new structures.
use super::alloc::Refcounts;
use super::driver::{Qcow2Driver, State};
use super::header::{self, push_extension, FEATURE_TABLE};
use super::mapping::{decode_l1, decode_l2, Cluster, COPIED};
use qimg_core::{Error, Result};

/// What to change (`None`: keep).
#[derive(Debug, Clone, Copy, Default)]
pub struct AmendOptions {
    /// Target version: 2 (`compat=0.10`) or 3 (`compat=1.1`).
    pub version: Option<u32>,
    /// `lazy_refcounts`.
    pub lazy_refcounts: Option<bool>,
    /// `refcount_bits` (a power of two, 1..=64).
    pub refcount_bits: Option<u32>,
}

/// Header extension types regenerated on every rewrite (all others are copied verbatim).
const REGENERATED: [u32; 2] = [header::EXT_BACKING_FORMAT, header::EXT_FEATURE_TABLE];

impl Qcow2Driver {
    /// Apply `o` to the open (writable) image.
    pub fn amend_with(&self, o: &AmendOptions) -> Result<()> {
        let mut st = self.lock()?;
        self.flush_locked(&mut st)?;
        let old_version = st.header.version;
        let version = o.version.unwrap_or(old_version);
        if version > old_version {
            st.header.version = 3;
            st.header.header_length = 112;
            st.header.compression_type = 0;
            st.header.incompatible = 0;
            st.header.compatible = 0;
            st.header.autoclear = 0;
            st.header.refcount_order = 4;
            self.rewrite_whole_header(&mut st)?;
        }
        if let Some(bits) = o.refcount_bits {
            if bits != st.header.refcount_bits() {
                self.change_refcount_order(&mut st, bits.trailing_zeros())?;
            }
        }
        if let Some(lazy) = o.lazy_refcounts {
            let on = st.header.compatible & header::COMPAT_LAZY_REFCOUNTS != 0;
            if lazy != on {
                st.header.compatible ^= header::COMPAT_LAZY_REFCOUNTS;
                st.header.incompatible &= !header::INCOMPAT_DIRTY;
                self.rewrite_whole_header(&mut st)?;
            }
        }
        if version < st.header.version {
            self.downgrade(&mut st)?;
        }
        Ok(())
    }

    /// Rewrite the whole header cluster from `st.header`, keeping unknown extensions.
    fn rewrite_whole_header(&self, st: &mut State) -> Result<()> {
        let cs = self.cs;
        let mut old = vec![0u8; cs as usize];
        self.storage.read_at(&mut old, 0)?;
        let kept = foreign_extensions(&old)?;
        let h = &st.header;
        let mut first = h.encode_fixed();
        if let Some(f) = &h.backing_format {
            push_extension(&mut first, header::EXT_BACKING_FORMAT, f.as_bytes());
        }
        for (ty, data) in &kept {
            push_extension(&mut first, *ty, data);
        }
        let name_len = h.backing_file.as_ref().map_or(0, |b| b.len());
        if h.version >= 3 {
            let mut table = Vec::new();
            for (ty, bit, name) in FEATURE_TABLE {
                let mut n = name.as_bytes().to_vec();
                n.resize(46, 0);
                table.extend_from_slice(&[*ty, *bit]);
                table.extend_from_slice(&n);
            }
            if (first.len() + 8 + table.len() + 8 + name_len) as u64 <= cs {
                push_extension(&mut first, header::EXT_FEATURE_TABLE, &table);
            }
        }
        first.extend_from_slice(&[0u8; 8]);
        if let Some(b) = &h.backing_file {
            let off = first.len() as u64;
            first.extend_from_slice(b.as_bytes());
            first[8..16].copy_from_slice(&off.to_be_bytes());
            first[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
        }
        if first.len() as u64 > cs {
            return Err(Error::invalid(
                "Header extensions and backing file name do not fit in one cluster",
            ));
        }
        first.resize(cs as usize, 0);
        self.storage.write_at(&first, 0)?;
        self.storage.flush()?;
        // The dirty bit now on disk is the header's (a v2 header has no field for it at all).
        st.dirty_on_disk =
            st.header.version >= 3 && st.header.incompatible & header::INCOMPAT_DIRTY != 0;
        Ok(())
    }

    /// Version 3 → 2 (QEMU's `qcow2_downgrade`).
    fn downgrade(&self, st: &mut State) -> Result<()> {
        let h = &st.header;
        if h.refcount_order != 4 {
            return Err(Error::unsupported("compat=0.10 requires refcount_bits=16"));
        }
        if h.incompatible & header::INCOMPAT_DATA_FILE != 0 {
            return Err(Error::unsupported(
                "Cannot downgrade an image with a data file",
            ));
        }
        if h.nb_snapshots > 0 {
            return Err(Error::unsupported(
                "Internal snapshots prevent downgrade of image",
            ));
        }
        let other = h.incompatible & !(header::INCOMPAT_COMPRESSION | header::INCOMPAT_DIRTY);
        if other != 0 {
            return Err(Error::unsupported(format!(
                "Cannot downgrade an image with incompatible features {other:#x} set"
            )));
        }
        self.expand_zero_clusters(st)?;
        self.flush_locked(st)?;
        let h = &mut st.header;
        h.version = 2;
        h.header_length = 72;
        h.incompatible = 0;
        h.compatible = 0;
        h.autoclear = 0;
        self.rewrite_whole_header(st)
    }

    /// Replace every zero-flagged L2 entry with one version 2 can hold.
    fn expand_zero_clusters(&self, st: &mut State) -> Result<()> {
        let cs = self.cs;
        let per_l2 = cs / 8;
        let backing = st.header.backing_file.is_some();
        let zstd = st.header.compression_type != 0;
        let zeros = vec![0u8; cs as usize];
        for i in 0..st.l1.len() {
            let l2off = decode_l1(st.l1[i], self.cluster_bits)?;
            if l2off == 0 {
                continue;
            }
            let entries = st.l2.get(self.storage.as_ref(), l2off, cs)?.entries.clone();
            for (k, &e) in entries.iter().enumerate() {
                let gc = i as u64 * per_l2 + k as u64;
                match decode_l2(e, self.cluster_bits)? {
                    Cluster::Zero(Some(host)) => {
                        // Encrypted images store the zeros encrypted.
                        self.write_data(gc * cs, host, &zeros)?;
                        self.set_l2_pub(st, gc, host | COPIED)?;
                    }
                    Cluster::Zero(None) if backing => {
                        let host = self.alloc_for_prealloc(st, gc, 1)?;
                        // Encrypted images store the zeros encrypted.
                        self.write_data(gc * cs, host, &zeros)?;
                        self.set_l2_pub(st, gc, host | COPIED)?;
                    }
                    Cluster::Zero(None) => self.set_l2_pub(st, gc, 0)?,
                    Cluster::Compressed(_) if zstd => {
                        return Err(Error::unsupported(
                            "Cannot downgrade an image with zstd-compressed clusters",
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Rebuild the refcount structures with entries of `2^order` bits.
    fn change_refcount_order(&self, st: &mut State, order: u32) -> Result<()> {
        let cs = self.cs;
        let s = self.storage.as_ref();
        self.flush_locked(st)?;
        let file_clusters = s.size()?.div_ceil(cs);
        let max = if order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << order)) - 1
        };
        // Every refcount must fit the new width before anything is written.
        if order < st.header.refcount_order {
            for c in 0..file_clusters {
                let v = st.rc.get(s, c)?;
                if v > max {
                    return Err(Error::unsupported(format!(
                        "Cannot decrease refcount entry width to {} bits: Cluster at offset {:#x} has a refcount of {v}",
                        1u32 << order,
                        c * cs
                    )));
                }
            }
        }
        // New blocks, then the table, at the end of the file; each counts everything before it
        // and itself. Blocks are built one at a time (memory stays one cluster per block).
        let per_block = cs * 8 / (1u64 << order);
        let (mut blocks, mut table) = (0u64, 0u64);
        loop {
            let total = file_clusters + blocks + table;
            let b = total.div_ceil(per_block);
            let t = (b * 8).div_ceil(cs);
            if (b, t) == (blocks, table) {
                break;
            }
            (blocks, table) = (b, t);
        }
        if table * cs > header::MAX_REFTABLE_BYTES {
            return Err(Error::unsupported("Refcount table would be too large"));
        }
        let total = file_clusters + blocks + table;
        let first_block = file_clusters * cs;
        let table_off = first_block + blocks * cs;
        let mut raw_table = vec![0u8; (table * cs) as usize];
        let bits = 1u64 << order;
        for b in 0..blocks {
            let mut data = vec![0u8; cs as usize];
            for idx in 0..per_block {
                let c = b * per_block + idx;
                if c >= total {
                    break;
                }
                let v = if c < file_clusters {
                    st.rc.get(s, c)?
                } else {
                    1
                };
                if v > max {
                    return Err(Error::unsupported(format!(
                        "Cannot decrease refcount entry width to {} bits: Cluster at offset {:#x} has a refcount of {v}",
                        1u32 << order,
                        c * cs
                    )));
                }
                put_entry(&mut data, idx as usize, bits, v);
            }
            s.write_at(&data, first_block + b * cs)?;
            raw_table[(b * 8) as usize..(b * 8 + 8) as usize]
                .copy_from_slice(&(first_block + b * cs).to_be_bytes());
        }
        s.write_at(&raw_table, table_off)?;
        s.flush()?;
        let old_table = (
            st.header.refcount_table_offset,
            st.header.refcount_table_clusters,
        );
        let old_blocks: Vec<u64> = st.rc.block_offsets().map(|(_, off)| off).collect();
        st.header.refcount_order = order;
        st.header.refcount_table_offset = table_off;
        st.header.refcount_table_clusters = table as u32;
        self.rewrite_whole_header(st)?;
        st.rc = Refcounts::load(
            s,
            table_off,
            table as u32,
            self.cluster_bits,
            order,
            s.size()?,
        )?;
        for off in old_blocks {
            st.rc.free_later(off, 1);
        }
        st.rc.free_later(old_table.0, old_table.1 as u64);
        self.flush_locked(st)
    }
}

/// Write refcount `v` at index `idx` of a block with `bits`-wide entries (the spec's packing:
/// sub-byte widths from the least significant bit, wider ones big-endian).
fn put_entry(data: &mut [u8], idx: usize, bits: u64, v: u64) {
    match bits {
        1 | 2 | 4 => {
            let per = (8 / bits) as usize;
            let shift = (idx % per) as u64 * bits;
            data[idx / per] |= ((v << shift) & 0xff) as u8;
        }
        8 => data[idx] = v as u8,
        16 => data[2 * idx..2 * idx + 2].copy_from_slice(&(v as u16).to_be_bytes()),
        32 => data[4 * idx..4 * idx + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        _ => data[8 * idx..8 * idx + 8].copy_from_slice(&v.to_be_bytes()),
    }
}

/// The header extensions in `first` that [`Qcow2Driver::rewrite_whole_header`] does not regenerate.
fn foreign_extensions(first: &[u8]) -> Result<Vec<(u32, Vec<u8>)>> {
    let be32 = |o: usize| u32::from_be_bytes([first[o], first[o + 1], first[o + 2], first[o + 3]]);
    // The extensions as they are on disk now (the in-memory header may already be amended).
    let on_disk_len = if be32(4) >= 3 { be32(100) as usize } else { 72 };
    let backing_at = u64::from_be_bytes(first[8..16].try_into().unwrap_or([0; 8]));
    let limit = match backing_at {
        0 => first.len(),
        b => (b as usize).min(first.len()),
    };
    let mut out = Vec::new();
    let mut off = on_disk_len;
    while off + 8 <= limit {
        let (ty, len) = (be32(off), be32(off + 4) as usize);
        if ty == 0 {
            break;
        }
        let end = off + 8 + len;
        if end > limit {
            return Err(Error::corrupt(format!(
                "Header extension {ty:#x} overflows the header cluster"
            )));
        }
        if !REGENERATED.contains(&ty) {
            out.push((ty, first[off + 8..end].to_vec()));
        }
        off = off + 8 + len.div_ceil(8) * 8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::put_entry;

    /// Entries written here read back through the allocator's own decoding, for every width.
    #[test]
    fn put_entry_matches_the_refcount_block_layout() {
        for order in 0..=6u32 {
            let bits = 1u64 << order;
            let mut data = vec![0u8; 64];
            let n = 64 * 8 / bits as usize;
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            for i in 0..n {
                put_entry(&mut data, i, bits, (i as u64 * 7 + 1) & max);
            }
            let mut rc = vec![0u8; 64];
            for i in 0..n {
                super::super::alloc::set_entry_for_test(
                    &mut rc,
                    i,
                    bits as u32,
                    (i as u64 * 7 + 1) & max,
                );
            }
            assert_eq!(data, rc, "refcount_bits={bits}");
        }
    }
}
