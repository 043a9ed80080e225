//! Space management: the refcount table, refcount blocks and cluster allocation.
//!
//! On-disk layout (QEMU docs/interop/qcow2.txt):
//! ```text
//! refcount table entry (u64, big-endian):
//!   bits 0-8    reserved (0)
//!   bits 9-63   offset of a refcount block (0 = not allocated: every cluster it would cover
//!               has refcount 0)
//! refcount block: one cluster of refcount_bits-wide entries, one per host cluster. Widths of
//! 8..64 bits are big-endian integers; 1, 2 and 4 bits are packed from the least significant
//! bit of each byte upwards.
//! ```
//! Refcount blocks are cached write-back. A missing block is placed at the first cluster of the
//! range it describes (free by definition, since nothing there is counted) and describes itself.
//! Frees are queued and applied only after the L2 tables that dropped the clusters are on disk.
use super::header::MAX_REFTABLE_BYTES;
use qimg_core::{Error, Result, Storage};
use std::collections::{BTreeMap, HashSet};

/// One cached refcount block.
struct Block {
    data: Vec<u8>,
    dirty: bool,
}

/// The refcount structures of one image.
pub struct Refcounts {
    /// Refcount table entries (host offsets of blocks, 0 = none).
    pub table: Vec<u64>,
    /// Host offset of the refcount table.
    pub table_offset: u64,
    table_dirty: bool,
    bits: u32,
    cluster_bits: u32,
    /// Clusters described by one block.
    per_block: u64,
    blocks: BTreeMap<u64, Block>,
    /// Next cluster index to try when allocating.
    hint: u64,
    /// One past the highest cluster index known in use.
    pub end_cluster: u64,
    /// Frees waiting for the L2 updates that dropped them to reach the disk.
    pending_frees: Vec<(u64, u64)>,
    /// During repair: references found by the check, so placement avoids used clusters.
    pub in_use: Option<Vec<u32>>,
    /// During repair: clusters this pass turned into metadata (never reset by the repair).
    pub new_meta: HashSet<u64>,
    /// Set when the table moved: the header must be rewritten (offset, clusters).
    pub table_moved: Option<(u64, u32)>,
}

fn entry_get(data: &[u8], idx: usize, bits: u32) -> u64 {
    match bits {
        1 | 2 | 4 => {
            let per = 8 / bits as usize;
            (data[idx / per] as u64 >> ((idx % per) as u32 * bits)) & ((1 << bits) - 1)
        }
        8 => data[idx] as u64,
        16 => u16::from_be_bytes([data[2 * idx], data[2 * idx + 1]]) as u64,
        32 => u32::from_be_bytes(data[4 * idx..4 * idx + 4].try_into().unwrap_or([0; 4])) as u64,
        _ => u64::from_be_bytes(data[8 * idx..8 * idx + 8].try_into().unwrap_or([0; 8])),
    }
}

fn entry_set(data: &mut [u8], idx: usize, bits: u32, v: u64) {
    match bits {
        1 | 2 | 4 => {
            let per = 8 / bits as usize;
            let shift = (idx % per) as u32 * bits;
            let mask = (((1u16 << bits) - 1) << shift) as u8;
            data[idx / per] = (data[idx / per] & !mask) | (((v as u8) << shift) & mask);
        }
        8 => data[idx] = v as u8,
        16 => data[2 * idx..2 * idx + 2].copy_from_slice(&(v as u16).to_be_bytes()),
        32 => data[4 * idx..4 * idx + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        _ => data[8 * idx..8 * idx + 8].copy_from_slice(&v.to_be_bytes()),
    }
}

/// The allocator's entry encoding, for other modules' tests.
#[cfg(test)]
pub(super) fn set_entry_for_test(data: &mut [u8], idx: usize, bits: u32, v: u64) {
    entry_set(data, idx, bits, v)
}

impl Refcounts {
    /// Load the refcount table (entries are validated when used).
    pub fn load(
        storage: &dyn Storage,
        table_offset: u64,
        table_clusters: u32,
        cluster_bits: u32,
        refcount_order: u32,
        file_size: u64,
    ) -> Result<Self> {
        let cs = 1u64 << cluster_bits;
        let mut raw = vec![0u8; (table_clusters as u64 * cs) as usize];
        storage.read_at(&mut raw, table_offset)?;
        let table: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let bits = 1u32 << refcount_order;
        Ok(Refcounts {
            table,
            table_offset,
            table_dirty: false,
            bits,
            cluster_bits,
            per_block: cs * 8 / bits as u64,
            blocks: BTreeMap::new(),
            hint: 0,
            end_cluster: file_size.div_ceil(cs),
            pending_frees: Vec::new(),
            in_use: None,
            new_meta: HashSet::new(),
            table_moved: None,
        })
    }

    /// Clusters described by one refcount block.
    pub fn per_block(&self) -> u64 {
        self.per_block
    }

    /// Largest refcount value this width holds.
    pub fn max_value(&self) -> u64 {
        if self.bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        }
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Host offsets of the allocated refcount blocks.
    pub fn block_offsets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.table
            .iter()
            .enumerate()
            .filter(|(_, &e)| e != 0)
            .map(|(i, &e)| (i, e & !0x1ff))
    }

    fn load_block(&mut self, storage: &dyn Storage, b: u64) -> Result<bool> {
        if self.blocks.contains_key(&b) {
            return Ok(true);
        }
        let Some(&e) = self.table.get(b as usize) else {
            return Ok(false);
        };
        let off = e & !0x1ff;
        if off == 0 {
            return Ok(false);
        }
        if off % self.cs() != 0 || off >= super::header::MAX_OFFSET {
            return Err(Error::corrupt(format!(
                "Refcount block offset {off:#x} is invalid (refcount table entry {b})"
            ))
            .with_offset(off));
        }
        if self.blocks.len() >= self.capacity() {
            // Bounded memory: drop clean blocks (dirty ones go at the next flush).
            self.blocks.retain(|_, blk| blk.dirty);
        }
        let mut data = vec![0u8; self.cs() as usize];
        storage.read_at(&mut data, off)?;
        self.blocks.insert(b, Block { data, dirty: false });
        Ok(true)
    }

    /// Most refcount blocks kept cached (about 32 MiB).
    fn capacity(&self) -> usize {
        ((32u64 << 20) >> self.cluster_bits).max(16) as usize
    }

    /// True if more blocks are cached than the cache should hold (a flush lets them go).
    pub fn over_capacity(&self) -> bool {
        self.blocks.len() > self.capacity()
    }

    /// Refcount of host cluster `ci`.
    pub fn get(&mut self, storage: &dyn Storage, ci: u64) -> Result<u64> {
        let b = ci / self.per_block;
        if !self.load_block(storage, b)? {
            return Ok(0);
        }
        let blk = &self.blocks[&b];
        Ok(entry_get(
            &blk.data,
            (ci % self.per_block) as usize,
            self.bits,
        ))
    }

    fn is_free(&mut self, storage: &dyn Storage, ci: u64) -> Result<bool> {
        if let Some(u) = &self.in_use {
            if u.get(ci as usize).copied().unwrap_or(0) != 0 {
                return Ok(false);
            }
        }
        Ok(self.get(storage, ci)? == 0)
    }

    /// Set the refcount of host cluster `ci`, creating its block if needed.
    pub fn set(&mut self, storage: &dyn Storage, ci: u64, v: u64) -> Result<()> {
        if v > self.max_value() {
            return Err(Error::corrupt(format!(
                "Refcount of cluster {ci} would overflow {} bits",
                self.bits
            )));
        }
        let b = ci / self.per_block;
        self.ensure_block(storage, b)?;
        let (bits, idx) = (self.bits, (ci % self.per_block) as usize);
        let blk = self
            .blocks
            .get_mut(&b)
            .ok_or_else(|| Error::corrupt("refcount block vanished"))?;
        entry_set(&mut blk.data, idx, bits, v);
        blk.dirty = true;
        if v > 0 {
            self.end_cluster = self.end_cluster.max(ci + 1);
        }
        Ok(())
    }

    /// Make sure block `b` exists (allocating and placing it if not).
    fn ensure_block(&mut self, storage: &dyn Storage, b: u64) -> Result<()> {
        if self.load_block(storage, b)? {
            return Ok(());
        }
        if b as usize >= self.table.len() {
            self.grow_table(storage, b + 1)?;
            if self.load_block(storage, b)? {
                return Ok(());
            }
        }
        let first = b * self.per_block;
        let own_free = self
            .in_use
            .as_ref()
            .is_none_or(|u| u.get(first as usize).copied().unwrap_or(0) == 0);
        let at = if own_free {
            first
        } else {
            // Repair only: the range is partly used but uncounted. Put the block past the end.
            let off = self.allocate_fresh(storage, 1)?;
            self.table[b as usize] = off;
            self.blocks.insert(
                b,
                Block {
                    data: vec![0u8; self.cs() as usize],
                    dirty: true,
                },
            );
            self.table_dirty = true;
            self.new_meta.insert(off / self.cs());
            return Ok(());
        };
        self.table[b as usize] = at * self.cs();
        self.table_dirty = true;
        let mut data = vec![0u8; self.cs() as usize];
        entry_set(&mut data, 0, self.bits, 1);
        self.blocks.insert(b, Block { data, dirty: true });
        self.new_meta.insert(at);
        self.end_cluster = self.end_cluster.max(at + 1);
        Ok(())
    }

    /// First cluster past everything in use (nothing there is counted).
    fn fresh_start(&self) -> u64 {
        self.end_cluster
            .max(self.in_use.as_ref().map_or(0, |u| u.len() as u64))
    }

    /// Blocks missing (or beyond the table) for the clusters `[p0, p0+len)`.
    fn missing_blocks(&self, p0: u64, len: u64) -> Vec<u64> {
        let (first, last) = (p0 / self.per_block, (p0 + len.max(1) - 1) / self.per_block);
        (first..=last)
            .filter(|&b| self.table.get(b as usize).is_none_or(|&e| e == 0))
            .collect()
    }

    /// For `k` clusters at `p0`: the missing blocks that must follow them so that every cluster
    /// of the run, and every new block, is counted.
    fn fresh_blocks(&self, p0: u64, k: u64) -> Vec<u64> {
        let mut miss = self.missing_blocks(p0, k);
        loop {
            let again = self.missing_blocks(p0, k + miss.len() as u64);
            if again.len() == miss.len() {
                return miss;
            }
            miss = again;
        }
    }

    /// Place `k` contiguous clusters at `p0` (past everything in use), followed by the refcount
    /// blocks `blocks` that count them and themselves. Works for any `k`, unlike first-fit with
    /// self-describing blocks, whose block starts split runs longer than a block's range.
    fn place_fresh(
        &mut self,
        storage: &dyn Storage,
        p0: u64,
        k: u64,
        blocks: &[u64],
    ) -> Result<()> {
        let cs = self.cs();
        for (i, &b) in blocks.iter().enumerate() {
            let at = p0 + k + i as u64;
            self.table[b as usize] = at * cs;
            self.blocks.insert(
                b,
                Block {
                    data: vec![0u8; cs as usize],
                    dirty: true,
                },
            );
            self.new_meta.insert(at);
        }
        if !blocks.is_empty() {
            self.table_dirty = true;
        }
        for c in p0..p0 + k + blocks.len() as u64 {
            self.set(storage, c, 1)?;
        }
        Ok(())
    }

    /// Move the refcount table to a larger place holding at least `min_entries` entries.
    fn grow_table(&mut self, storage: &dyn Storage, min_entries: u64) -> Result<()> {
        let cs = self.cs();
        let per_cluster = cs / 8;
        let mut entries = min_entries
            .max(self.table.len() as u64 * 2)
            .div_ceil(per_cluster)
            * per_cluster;
        let p0 = self.fresh_start();
        let (k, blocks) = loop {
            let k = entries / per_cluster;
            if k * cs > MAX_REFTABLE_BYTES {
                return Err(Error::unsupported(
                    "The refcount table would exceed its maximum size (8 MiB)",
                ));
            }
            let blocks = self.fresh_blocks(p0, k);
            let need = (p0 + k + blocks.len() as u64).div_ceil(self.per_block);
            if need > entries {
                entries = need.div_ceil(per_cluster) * per_cluster;
                continue;
            }
            break (k, blocks);
        };
        let old_offset = self.table_offset;
        let old_clusters = (self.table.len() as u64 * 8).div_ceil(cs);
        self.table.resize(entries as usize, 0);
        self.place_fresh(storage, p0, k, &blocks)?;
        self.table_offset = p0 * cs;
        // Blocks first, then the table, so the new table never points at unwritten blocks.
        self.write_blocks(storage)?;
        self.write_table(storage)?;
        storage.flush()?;
        self.table_moved = Some((self.table_offset, k as u32));
        if old_offset != 0 {
            self.pending_frees.push((old_offset / cs, old_clusters));
        }
        Ok(())
    }

    /// Allocate `n` contiguous clusters past everything in use (for runs that must be
    /// contiguous however long, like L1 tables). Returns the host offset.
    pub fn allocate_fresh(&mut self, storage: &dyn Storage, n: u64) -> Result<u64> {
        for _ in 0..4 {
            let p0 = self.fresh_start();
            let blocks = self.fresh_blocks(p0, n);
            let need = (p0 + n + blocks.len() as u64).div_ceil(self.per_block);
            if need > self.table.len() as u64 {
                self.grow_table(storage, need)?;
                continue;
            }
            self.place_fresh(storage, p0, n, &blocks)?;
            return Ok(p0 * self.cs());
        }
        Err(Error::new(
            qimg_core::ErrorCode::Internal,
            "could not place a contiguous run",
        ))
    }

    /// Longest run [`Self::allocate`] accepts (runs are split at refcount block starts).
    pub fn max_run(&self) -> u64 {
        (self.per_block / 2).max(1)
    }

    /// Allocate `n` contiguous free clusters with refcount 1; returns the host offset.
    pub fn allocate(&mut self, storage: &dyn Storage, n: u64) -> Result<u64> {
        if n > self.max_run() {
            return self.allocate_fresh(storage, n);
        }
        let mut ci = self.hint;
        loop {
            // Blocks first (they may take spots in the run, or move the table), then the check.
            for b in ci / self.per_block..=(ci + n - 1) / self.per_block {
                self.ensure_block(storage, b)?;
            }
            let mut busy = None;
            for c in ci..ci + n {
                if !self.is_free(storage, c)? {
                    busy = Some(c);
                    break;
                }
            }
            match busy {
                Some(c) => ci = c + 1,
                None => break,
            }
        }
        for j in 0..n {
            self.set(storage, ci + j, 1)?;
        }
        self.hint = ci + n;
        Ok(ci * self.cs())
    }

    /// Queue a free of `n` clusters at host offset `off` (applied after L2 tables are written).
    pub fn free_later(&mut self, off: u64, n: u64) {
        self.pending_frees.push((off / self.cs(), n));
    }

    /// True if frees are waiting.
    pub fn has_pending_frees(&self) -> bool {
        !self.pending_frees.is_empty()
    }

    /// Apply queued frees (decrement refcounts); call only once the referring tables are durable.
    pub fn apply_frees(&mut self, storage: &dyn Storage) -> Result<()> {
        for (ci, n) in std::mem::take(&mut self.pending_frees) {
            for c in ci..ci + n {
                let r = self.get(storage, c)?;
                if r == 0 {
                    return Err(Error::corrupt(format!(
                        "Freeing cluster {c} whose refcount is already 0"
                    )));
                }
                self.set(storage, c, r - 1)?;
                if r == 1 {
                    self.hint = self.hint.min(c);
                }
            }
        }
        Ok(())
    }

    /// Drop refcount block `b` from the table if every cluster it describes is free, except
    /// perhaps the block itself (QEMU's `qcow2_shrink_reftable`). A block counted by another block
    /// is queued for freeing; a self-describing one is free once the table entry is gone.
    /// Returns true if dropped.
    pub fn drop_unused_block(&mut self, storage: &dyn Storage, b: u64) -> Result<bool> {
        if !self.load_block(storage, b)? {
            return Ok(false);
        }
        let off = self.table[b as usize] & !0x1ff;
        let own = off / self.cs();
        let first = b * self.per_block;
        let self_idx = (first..first + self.per_block)
            .contains(&own)
            .then(|| (own - first) as usize);
        let blk = &self.blocks[&b];
        let used = (0..self.per_block as usize)
            .any(|i| Some(i) != self_idx && entry_get(&blk.data, i, self.bits) != 0);
        if used {
            return Ok(false);
        }
        self.blocks.remove(&b);
        self.table[b as usize] = 0;
        self.table_dirty = true;
        self.hint = self.hint.min(first);
        if self_idx.is_none() {
            self.free_later(off, 1);
        }
        Ok(true)
    }

    /// True if anything is waiting to be written.
    pub fn is_dirty(&self) -> bool {
        self.table_dirty || self.blocks.values().any(|b| b.dirty)
    }

    fn write_blocks(&mut self, storage: &dyn Storage) -> Result<()> {
        for (b, blk) in self.blocks.iter_mut() {
            if blk.dirty {
                let off = self.table[*b as usize] & !0x1ff;
                storage.write_at(&blk.data, off)?;
                blk.dirty = false;
            }
        }
        Ok(())
    }

    fn write_table(&mut self, storage: &dyn Storage) -> Result<()> {
        let mut raw = Vec::with_capacity(self.table.len() * 8);
        for e in &self.table {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        storage.write_at(&raw, self.table_offset)?;
        self.table_dirty = false;
        Ok(())
    }

    /// Write dirty blocks, then the table if it changed (no flush).
    pub fn write_back(&mut self, storage: &dyn Storage) -> Result<()> {
        self.write_blocks(storage)?;
        if self.table_dirty {
            self.write_table(storage)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_entries_round_trip_for_every_width() {
        for bits in [1u32, 2, 4, 8, 16, 32, 64] {
            let mut d = vec![0u8; 512];
            let n = 512 * 8 / bits as usize;
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            for i in 0..n {
                entry_set(&mut d, i, bits, (i as u64 * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    entry_get(&d, i, bits),
                    (i as u64 * 7) & max,
                    "bits {bits} idx {i}"
                );
            }
        }
        // QEMU packs sub-byte refcounts from the least significant bit.
        let mut d = vec![0u8; 1];
        entry_set(&mut d, 0, 1, 1);
        assert_eq!(d[0], 1);
        entry_set(&mut d, 1, 2, 3);
        assert_eq!(d[0], 0b1101);
    }
}
