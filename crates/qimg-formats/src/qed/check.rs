//! QEMU's `qed_check`: walk the L1 and L2 tables, count offsets that are unaligned, inside the
//! header or past the end of the file (corruptions; with `fix`, cleared to unallocated), clusters
//! referenced twice (corruptions, never fixed) and clusters nobody references (leaks, never
//! reclaimed: QED only appends). A fixing check that leaves no corruption clears the need-check
//! flag.
use super::header::{QedHeader, ZERO_CLUSTER};
use super::mapping::QedTables;
use crate::l2map::{decode_table, encode_table, TableMap};
use qimg_core::{CheckReport, Result};

/// A bitmap of host clusters referenced so far.
struct Used {
    bits: Vec<u64>,
}

impl Used {
    /// Mark `n` clusters from `first`; returns how many were already marked.
    fn mark(&mut self, first: u64, n: u64) -> u64 {
        let mut dup = 0;
        for c in first..first + n {
            let (w, b) = ((c / 64) as usize, c % 64);
            if let Some(word) = self.bits.get_mut(w) {
                if *word & (1 << b) != 0 {
                    dup += 1;
                }
                *word |= 1 << b;
            }
        }
        dup
    }

    fn is_set(&self, c: u64) -> bool {
        self.bits
            .get((c / 64) as usize)
            .is_some_and(|w| w & (1 << (c % 64)) != 0)
    }
}

/// Check (and with `fix`, repair) the tables of `map`, whose metadata must be flushed. Returns
/// the report and whether the need-check flag may be cleared.
pub fn check(map: &TableMap<QedTables>, h: &QedHeader, fix: bool) -> Result<(CheckReport, bool)> {
    let cs = h.cluster_size;
    let storage = map.storage().clone();
    let file_size = storage.size()? & !(cs - 1);
    let nclusters = file_size / cs;
    let mut used = Used {
        bits: vec![0u64; nclusters.div_ceil(64) as usize],
    };
    let mut r = CheckReport {
        total_clusters: Some(h.image_size.div_ceil(cs)),
        ..Default::default()
    };
    used.mark(h.l1_table_offset / cs, h.table_size);
    let mut l1 = map.l1()?;
    let mut l1_fixed = false;
    let mut allocated = 0u64;
    let mut fragmented = 0u64;
    for entry in l1.iter_mut() {
        let l2off = *entry;
        if l2off == 0 {
            continue;
        }
        if !h.table_offset_valid(l2off, file_size) {
            if fix {
                *entry = 0;
                l1_fixed = true;
                r.corruptions_fixed += 1;
            } else {
                r.corruptions += 1;
            }
            continue;
        }
        let dup = used.mark(l2off / cs, h.table_size);
        if dup > 0 {
            r.corruptions += dup;
            continue;
        }
        let mut raw = vec![0u8; h.table_bytes() as usize];
        if storage.read_at(&mut raw, l2off).is_err() {
            r.check_errors += 1;
            continue;
        }
        let mut l2 = decode_table(&raw, false);
        let mut prev: Option<u64> = None;
        let mut l2_fixed = false;
        for e in l2.iter_mut() {
            if *e == 0 || *e == ZERO_CLUSTER {
                continue;
            }
            // Counted before validation, as QEMU does.
            allocated += 1;
            if prev.is_some_and(|p| p + cs != *e) {
                fragmented += 1;
            }
            prev = Some(*e);
            if !h.cluster_offset_valid(*e, file_size) {
                if fix {
                    *e = 0;
                    l2_fixed = true;
                    r.corruptions_fixed += 1;
                } else {
                    r.corruptions += 1;
                }
                continue;
            }
            r.corruptions += used.mark(*e / cs, 1);
        }
        if l2_fixed {
            storage.write_at(&encode_table(&l2, false), l2off)?;
        }
    }
    if l1_fixed {
        storage.write_at(&encode_table(&l1, false), h.l1_table_offset)?;
    }
    if r.check_errors == 0 {
        r.leaks = (h.header_size..nclusters)
            .filter(|&c| !used.is_set(c))
            .count() as u64;
    }
    r.allocated_clusters = Some(allocated);
    r.fragmented_clusters = Some(fragmented);
    if l1_fixed || r.corruptions_fixed > 0 {
        storage.flush()?;
        map.reload()?;
    }
    let clean = fix && r.corruptions == 0 && r.check_errors == 0;
    Ok((r, clean))
}
