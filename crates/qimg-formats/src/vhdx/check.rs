//! `check` for VHDX, as QEMU's: every present payload block must lie inside the file and must
//! not overlap the header section, the log, the BAT or metadata regions, or another block. A log
//! replayed by a writable open counts as one fixed corruption (QEMU's `log_replayed_on_open`).
use super::header::{RegionTable, VhdxHeader};
use super::mapping::Bat;
use super::MIB;
use qimg_core::CheckReport;

/// Findings, worded as QEMU reports them.
pub fn scan(bat: &Bat, rt: &RegionTable, h: &VhdxHeader, file_size: u64) -> Vec<String> {
    let mut msgs = Vec::new();
    let mut fixed: Vec<(u64, u64)> = vec![
        (0, MIB),
        (h.log_offset, h.log_offset + h.log_length as u64),
        (rt.bat.offset, rt.bat.offset + rt.bat.length as u64),
        (
            rt.metadata.offset,
            rt.metadata.offset + rt.metadata.length as u64,
        ),
    ];
    let mut blocks = bat.host_ranges();
    blocks.sort_unstable();
    let mut prev_end = 0u64;
    for (start, len, i) in blocks {
        let Some(end) = start.checked_add(len).filter(|&e| e <= i64::MAX as u64) else {
            msgs.push(format!("VHDX BAT entry {i} offset overflow."));
            continue;
        };
        if start >= file_size {
            msgs.push(format!(
                "VHDX BAT entry {i} start offset {start} points after end of file ({file_size}). Image has probably been truncated."
            ));
        } else if end > file_size {
            msgs.push(format!(
                "VHDX BAT entry {i} end offset {} points after end of file ({file_size}). Image has probably been truncated.",
                end - 1
            ));
        }
        if fixed.iter().any(|&(s, e)| start < e && end > s) || start < prev_end {
            msgs.push(format!(
                "VHDX BAT entry {i} offset {start} overlaps with another region"
            ));
        }
        prev_end = prev_end.max(end);
    }
    fixed.clear();
    msgs
}

/// The report for `check`.
pub fn check(bat: &Bat, rt: &RegionTable, h: &VhdxHeader, file_size: u64) -> CheckReport {
    let messages = scan(bat, rt, h, file_size);
    CheckReport {
        corruptions: messages.len() as u64,
        messages: messages
            .into_iter()
            .map(|m| format!("ERROR: {m}"))
            .collect(),
        ..Default::default()
    }
}
