//! `rebase` (safe mode) over one guest range: where the top layer does not allocate a range, the
//! old backing chain and the new backing file are read side by side, and the granules where they
//! differ are written into the top layer with the old contents, so the image reads the same once
//! it points at the new backing file.
use crate::driver::{BlockDriver, LayerStatus};
use crate::error::Result;
use crate::zero::is_zero;
use std::sync::Arc;

/// Largest read issued at once.
const MAX_IO: u64 = 4 << 20;

/// How [`rebase_range`] writes what it copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct RebaseOptions {
    /// `-c`: write whole clusters compressed (where the format can).
    pub compress: bool,
    /// Compressor level with `compress`.
    pub compress_level: Option<u32>,
}

/// What [`rebase_range`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebaseStats {
    /// Guest bytes compared (unallocated in the top layer).
    pub bytes_compared: u64,
    /// Guest bytes written into the top layer.
    pub bytes_written: u64,
}

/// Read `buf.len()` bytes at `offset` from `layer`, zeros where it has none (no layer, or past
/// its end).
fn read_or_zero(layer: Option<&Arc<dyn BlockDriver>>, offset: u64, buf: &mut [u8]) -> Result<()> {
    let Some(l) = layer else {
        buf.fill(0);
        return Ok(());
    };
    let n = l
        .virtual_size()
        .saturating_sub(offset)
        .min(buf.len() as u64) as usize;
    if n > 0 {
        l.read(offset, &mut buf[..n])?;
    }
    buf[n..].fill(0);
    Ok(())
}

/// Make `top` read the same over `[offset, offset+length)` once its backing file is `new_base`
/// (`None`: no backing file) instead of its current backing chain. `granule` is the top layer's
/// allocation unit (its cluster size): differences are copied in whole granules.
pub fn rebase_range(
    top: &dyn BlockDriver,
    new_base: Option<&Arc<dyn BlockDriver>>,
    offset: u64,
    length: u64,
    granule: u64,
    opts: &RebaseOptions,
) -> Result<RebaseStats> {
    let granule = granule.clamp(512, MAX_IO);
    let old = top.backing();
    let mut stats = RebaseStats::default();
    let end = offset + length;
    let mut pos = offset;
    let mut a = Vec::new();
    let mut b = Vec::new();
    while pos < end {
        let extents = top.block_status(pos, end - pos)?;
        if extents.is_empty() {
            return Err(crate::Error::new(
                crate::ErrorCode::Internal,
                "block status returned no extent",
            ));
        }
        for e in extents {
            let start = e.start.max(pos);
            let stop = (e.start + e.length).min(end);
            if stop <= start {
                continue;
            }
            if e.status == LayerStatus::Unallocated {
                let mut p = start;
                while p < stop {
                    let n = (stop - p).min(MAX_IO) as usize;
                    a.resize(n, 0);
                    b.resize(n, 0);
                    read_or_zero(old.as_ref(), p, &mut a)?;
                    read_or_zero(new_base, p, &mut b)?;
                    stats.bytes_compared += n as u64;
                    copy_differences(top, p, &a, &b, granule, opts, &mut stats)?;
                    p += n as u64;
                }
            }
            pos = stop;
        }
    }
    Ok(stats)
}

/// Write the granules of `old` (at guest `at`) that differ from `new` into `top`, merging
/// neighbouring granules into one write.
fn copy_differences(
    top: &dyn BlockDriver,
    at: u64,
    old: &[u8],
    new: &[u8],
    granule: u64,
    opts: &RebaseOptions,
    stats: &mut RebaseStats,
) -> Result<()> {
    let n = old.len() as u64;
    let mut i = 0u64;
    let mut run: Option<u64> = None;
    while i < n {
        // Granule boundaries are guest-aligned.
        let g_end = ((at + i) / granule + 1) * granule - at;
        let j = g_end.min(n);
        let differs = old[i as usize..j as usize] != new[i as usize..j as usize];
        match (differs, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                write_old(top, at + s, &old[s as usize..i as usize], granule, opts)?;
                stats.bytes_written += i - s;
                run = None;
            }
            _ => {}
        }
        i = j;
    }
    if let Some(s) = run {
        write_old(top, at + s, &old[s as usize..], granule, opts)?;
        stats.bytes_written += n - s;
    }
    Ok(())
}

/// Write one run of old contents: whole clusters compressed with `-c`, the rest plainly.
fn write_old(
    top: &dyn BlockDriver,
    at: u64,
    data: &[u8],
    granule: u64,
    opts: &RebaseOptions,
) -> Result<()> {
    if is_zero(data) {
        return top.write_zeroes(at, data.len() as u64, false);
    }
    let cs = match (opts.compress, top.compressed_cluster_size()) {
        (true, Some(cs)) if cs == granule => cs,
        _ => return top.write(at, data),
    };
    let size = top.virtual_size();
    for (k, chunk) in data.chunks(cs as usize).enumerate() {
        let off = at + k as u64 * cs;
        let whole = off.is_multiple_of(cs)
            && (chunk.len() as u64 == cs || off + chunk.len() as u64 == size);
        if is_zero(chunk) {
            top.write_zeroes(off, chunk.len() as u64, false)?;
        } else if whole {
            top.write_compressed(off, chunk, opts.compress_level)?;
        } else {
            top.write(off, chunk)?;
        }
    }
    Ok(())
}
