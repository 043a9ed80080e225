//! `check` as QEMU's `vmdk_co_check`: every allocated grain must start inside its extent file
//! ("ERROR: cluster offset for sector N points after EOF"), and every table the directory names
//! must be readable.
use super::driver::{ExtentData, VmdkDriver};
use super::header::SECTOR;
use super::mapping::Grain;
use qimg_core::{CheckReport, Result};

/// Check every sparse extent of `d`.
pub fn check(d: &VmdkDriver) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    for e in d.extents() {
        let ExtentData::Sparse(Some(s)) = &e.data else {
            continue;
        };
        let file_len = s.storage.size()?;
        let gb = s.h.grain_bytes();
        let per = s.h.gtes_per_gt as u64;
        let grains = e.len.div_ceil(gb);
        let mut g = 0;
        while g < grains {
            let n = per.min(grains - g);
            let list = match s.grains(g, n) {
                Ok(l) => l,
                Err(err) => {
                    r.corruptions += 1;
                    r.messages.push(format!(
                        "ERROR: grain table for sector {}: {}",
                        g * s.h.grain_size,
                        err.message
                    ));
                    g += n;
                    continue;
                }
            };
            for (k, gr) in list.iter().enumerate() {
                if let Grain::Data(h) | Grain::Compressed(h) = gr {
                    if *h >= file_len {
                        r.corruptions += 1;
                        r.messages.push(format!(
                            "ERROR: cluster offset for sector {} points after EOF",
                            (e.start / SECTOR) + (g + k as u64) * s.h.grain_size
                        ));
                    }
                }
            }
            g += n;
        }
    }
    Ok(r)
}
