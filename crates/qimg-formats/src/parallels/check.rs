//! `qemu-img check` for Parallels images, in QEMU 10's order and wording: the in-use marker
//! ("image was not closed correctly"), BAT entries outside the data area, entries sharing a host
//! cluster, space leaked after the last cluster, then the cluster statistics.
//!
//! Repairs (`-r all`) zero out-of-image entries, give a duplicated entry a copy of its cluster at
//! the end of the file (data → flush → BAT), clear the marker; `-r leaks` cuts the file after the
//! last used cluster.
use super::alloc::data_start;
use super::driver::State;
use super::header::{Header, SECTOR};
use super::mapping::Bat;
use qimg_core::{CheckReport, RepairMode, Result, Storage};

/// "Repairing" or "ERROR", as QEMU prefixes each finding.
fn word(fixing: bool) -> &'static str {
    if fixing {
        "Repairing"
    } else {
        "ERROR"
    }
}

/// End of the last cluster inside the file (entries outside it ignored), at least the data start.
fn high_end(h: &Header, bat: &Bat, file_size: u64) -> u64 {
    let cs = h.cluster_size();
    bat.entries
        .iter()
        .filter(|&&e| e != 0)
        .map(|&e| u64::from(e) * h.off_multiplier() + cs)
        .filter(|&end| end <= file_size)
        .max()
        .unwrap_or(0)
        .max(data_start(h))
}

/// Check (and repair as `repair` allows) the image behind `st`.
pub(super) fn check(
    storage: &dyn Storage,
    st: &mut State,
    repair: RepairMode,
) -> Result<CheckReport> {
    let fix_errors = repair == RepairMode::All;
    let fix_leaks = repair != RepairMode::None;
    let mut r = CheckReport::default();
    let cs = st.h.cluster_size();
    // As QEMU, the file length counts whole sectors.
    let mut file_size = storage.size()?.next_multiple_of(SECTOR);
    let mut bat_changed = false;

    // 1. The in-use marker.
    if st.h.in_use == super::header::IN_USE && !st.marked {
        r.messages.push(format!(
            "{} image was not closed correctly",
            word(fix_errors)
        ));
        r.corruptions += 1;
        if fix_errors {
            r.corruptions_fixed += 1;
        }
    }

    // 2. Entries outside the data area or the file.
    let start = data_start(&st.h);
    for i in 0..st.bat.entries.len() {
        let Some(host) = st.bat.host(&st.h, i as u64) else {
            continue;
        };
        if host < start || host + cs > file_size {
            r.messages
                .push(format!("{} cluster {i} is outside image", word(fix_errors)));
            r.corruptions += 1;
            if fix_errors {
                st.bat.set(&st.h, i, 0)?;
                bat_changed = true;
                r.corruptions_fixed += 1;
            }
        }
    }

    // 3. Entries sharing a host cluster: the later entry gets a copy.
    let mut order: Vec<(u64, usize)> = (0..st.bat.entries.len())
        .filter_map(|i| st.bat.host(&st.h, i as u64).map(|h| (h, i)))
        .filter(|&(h, _)| h >= start && h + cs <= file_size)
        .collect();
    order.sort_unstable();
    let mut end = high_end(&st.h, &st.bat, file_size).next_multiple_of(st.h.off_multiplier());
    let mut buf = Vec::new();
    for w in 1..order.len() {
        let (prev, _) = order[w - 1];
        let (host, i) = order[w];
        if host >= prev + cs {
            continue;
        }
        r.messages.push(format!(
            "{} duplicate offset in BAT entry {i}",
            word(fix_errors)
        ));
        r.corruptions += 1;
        if fix_errors {
            buf.resize(cs as usize, 0);
            storage.read_at(&mut buf, host)?;
            storage.write_at(&buf, end)?;
            storage.flush()?;
            st.bat.set(&st.h, i, end)?;
            bat_changed = true;
            end += cs;
            file_size = file_size.max(end);
            r.corruptions_fixed += 1;
        }
    }
    if bat_changed {
        st.bat.write_dirty(storage, &st.h)?;
        storage.flush()?;
    }

    // 4. Space after the last used cluster.
    let image_end = high_end(&st.h, &st.bat, file_size);
    if file_size > image_end {
        let leaked = file_size - image_end;
        r.messages.push(format!(
            "{} space leaked at the end of the image {leaked}",
            word(fix_leaks)
        ));
        let count = leaked.div_ceil(cs);
        r.leaks += count;
        if fix_leaks {
            storage.truncate(image_end)?;
            storage.flush()?;
            r.leaks_fixed += count;
        }
    }
    if fix_errors && st.h.in_use == super::header::IN_USE && !st.marked {
        st.h.in_use = 0;
        storage.write_at(&st.h.encode(), 0)?;
        storage.flush()?;
    }
    if fix_errors {
        st.needs_repair = false;
        st.data_end = super::alloc::data_end(&st.h, &st.bat);
    }
    if r.corruptions_fixed > 0 {
        r.corruptions -= r.corruptions_fixed;
    }
    if r.leaks_fixed > 0 {
        r.leaks -= r.leaks_fixed;
    }

    // 5. Statistics.
    let mut prev = 0u64;
    let (mut allocated, mut fragmented) = (0u64, 0u64);
    for i in 0..st.bat.entries.len() {
        match st.bat.host(&st.h, i as u64) {
            None => prev = 0,
            Some(off) => {
                if prev != 0 && prev + cs != off {
                    fragmented += 1;
                }
                prev = off;
                allocated += 1;
            }
        }
    }
    r.image_end_offset = Some(image_end);
    r.total_clusters = Some(u64::from(st.h.bat_entries));
    r.allocated_clusters = Some(allocated);
    r.fragmented_clusters = Some(fragmented);
    r.compressed_clusters = Some(0);
    Ok(r)
}
