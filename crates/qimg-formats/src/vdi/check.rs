//! `check` for VDI, as QEMU's: every allocated map entry must name a slot below
//! `blocks_in_image` used by no other entry, and the header's `blocks_allocated` must equal the
//! number of allocated entries. Repair is not supported: QEMU's check returns ENOTSUP when asked
//! to fix, which qemu-img reports as "This image format does not support checks" (exit 63).
use super::header::{is_allocated, VdiHeader};
use super::mapping::BlockMap;
use qimg_core::{CheckReport, Error, RepairMode, Result};

/// Check the in-memory header and map; findings are worded as QEMU prints them.
pub fn check(h: &VdiHeader, map: &BlockMap, repair: RepairMode) -> Result<CheckReport> {
    if repair != RepairMode::None {
        return Err(Error::unsupported(
            "This image format does not support checks",
        ));
    }
    let mut r = CheckReport::default();
    let mut used = vec![false; h.blocks_in_image as usize];
    let mut allocated = 0u32;
    for (block, &e) in map.entries.iter().enumerate() {
        if !is_allocated(e) {
            continue;
        }
        if e < h.blocks_in_image {
            allocated += 1;
            let u = &mut used[e as usize];
            if !*u {
                *u = true;
            } else {
                // QEMU's wording names the slot twice (it records the slot, not the block).
                r.messages
                    .push(format!("ERROR: block index {e} also used by {e}"));
                r.corruptions += 1;
            }
        } else {
            r.messages
                .push(format!("ERROR: block index {block} too large, is {e}"));
            r.corruptions += 1;
        }
    }
    if allocated != h.blocks_allocated {
        r.messages.push(format!(
            "ERROR: allocated blocks mismatch, is {allocated}, should be {}",
            h.blocks_allocated
        ));
        r.corruptions += 1;
    }
    Ok(r)
}
