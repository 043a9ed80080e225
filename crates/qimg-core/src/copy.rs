//! The convert and compare hot loops over one guest range: block status, read, zero detection
//! and write, all inside one call so the N-API boundary is crossed once per multi-MiB chunk.
use crate::chain::map_extents;
use crate::driver::BlockDriver;
use crate::error::Result;
use crate::zero::{is_zero, run_length};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Largest single read the loops issue.
const MAX_IO: u64 = 4 << 20;

thread_local! {
    /// One reusable I/O buffer per worker thread: allocating (and unmapping) a fresh multi-MiB
    /// buffer per chunk costs page faults and cross-CPU TLB shootdowns.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How [`copy_range`] treats zeros.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// `-S`: a run of at least this many zero bytes (aligned to this granule) is not written.
    /// 0 writes every byte read (a fully allocated target).
    pub sparse_size: u64,
    /// The target already reads as zeros (freshly created, or `--target-is-zero`): zero ranges
    /// need no write at all.
    pub target_zeroed: bool,
    /// Copy only what the first `n` layers of the source chain allocate (zeros included, written
    /// explicitly) and leave the rest alone: `convert -B` copies the top layer (`Some(1)`) into a
    /// target with its own backing file; `commit` copies the layers above the base into it.
    pub layers: Option<u32>,
    /// `convert -c`: write every non-zero cluster compressed.
    pub compress: bool,
    /// `--compress-level`: the compressor's level (`None`: the format's default).
    pub compress_level: Option<u32>,
    /// `--compress-threads` for this range: threads compressing its clusters (0 or 1: the
    /// calling thread only).
    pub compress_threads: usize,
}

/// What [`copy_range`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written as data to the target.
    pub bytes_written: u64,
    /// Bytes that were zero in the source (skipped or written as zeroes).
    pub bytes_zero: u64,
}

/// Copy guest bytes `[offset, offset+length)` of `src` (through its backing chain) to `dst` at
/// `offset + dst_delta` (non-zero when several sources are concatenated), skipping what reads as
/// zeros where the target is already zeroed.
pub fn copy_range(
    src: &dyn BlockDriver,
    dst: &dyn BlockDriver,
    offset: u64,
    length: u64,
    dst_delta: u64,
    opts: &CopyOptions,
) -> Result<CopyStats> {
    let dst = &Shifted {
        inner: dst,
        delta: dst_delta,
    };
    // With a backing file under the target, nothing there is known to read as zeros.
    let opts = &CopyOptions {
        target_zeroed: opts.target_zeroed && opts.layers.is_none(),
        ..*opts
    };
    if opts.compress {
        return copy_compressed(src, dst, offset, length, opts);
    }
    let mut stats = CopyStats::default();
    let end = offset + length;
    let mut pos = offset;
    let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let result = (|| -> Result<()> {
        while pos < end {
            let extents = map_extents(src, pos, end - pos)?;
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
                if opts.layers.is_some_and(|k| e.depth >= k || !e.present) {
                    // Left unallocated: the target's own backing file provides it.
                } else if e.zero {
                    zero_target(dst, start, stop - start, opts, &mut stats)?;
                } else {
                    copy_data(src, dst, start, stop - start, opts, &mut buf, &mut stats)?;
                }
                pos = stop;
            }
        }
        Ok(())
    })();
    BUF.with(|b| *b.borrow_mut() = buf);
    result?;
    if stats.bytes_written > 0 {
        dst.inner.storage().start_writeback();
    }
    Ok(stats)
}

/// `convert -c`: cluster by cluster, on `opts.compress_threads` threads: a cluster the source
/// already stores compressed in a compatible way is copied as stored; all-zero clusters are
/// skipped (or zeroed); the rest are compressed. The range must start on a target cluster
/// boundary.
fn copy_compressed(
    src: &dyn BlockDriver,
    dst: &Shifted,
    offset: u64,
    length: u64,
    opts: &CopyOptions,
) -> Result<CopyStats> {
    let cs = dst.inner.compressed_cluster_size().ok_or_else(|| {
        crate::Error::unsupported(format!(
            "Compression not supported for this file format ({})",
            dst.inner.format_name()
        ))
    })?;
    if !(offset + dst.delta).is_multiple_of(cs) {
        return Err(crate::Error::unsupported(
            "compressed convert needs each source to start on a target cluster boundary",
        ));
    }
    let clusters = length.div_ceil(cs);
    let threads = (opts.compress_threads.max(1) as u64).min(clusters.max(1)) as usize;
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let work = || -> Result<CopyStats> {
        let mut stats = CopyStats::default();
        let mut buf = vec![0u8; cs as usize];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= clusters || failed.load(Ordering::Relaxed) {
                return Ok(stats);
            }
            let pos = offset + i * cs;
            let n = cs.min(offset + length - pos) as usize;
            let r = compress_one(src, dst, pos, &mut buf[..n], cs, opts, &mut stats);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
                return r.map(|_| stats);
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut total = work();
        for h in helpers {
            let r = h.join().unwrap_or_else(|_| {
                Err(crate::Error::new(
                    crate::ErrorCode::Internal,
                    "a compression thread panicked",
                ))
            });
            total = match (total, r) {
                (Ok(a), Ok(b)) => Ok(CopyStats {
                    bytes_read: a.bytes_read + b.bytes_read,
                    bytes_written: a.bytes_written + b.bytes_written,
                    bytes_zero: a.bytes_zero + b.bytes_zero,
                }),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        total
    })
}

/// One cluster of [`copy_compressed`]: `buf` is its length (a whole cluster but at the end).
fn compress_one(
    src: &dyn BlockDriver,
    dst: &Shifted,
    pos: u64,
    buf: &mut [u8],
    cs: u64,
    opts: &CopyOptions,
    stats: &mut CopyStats,
) -> Result<()> {
    let n = buf.len() as u64;
    if n == cs && pos.is_multiple_of(cs) {
        if let Some(c) = src.read_compressed_raw(pos)? {
            if c.cluster_size == cs && dst.inner.write_compressed_raw(pos + dst.delta, &c)? {
                stats.bytes_read += n;
                stats.bytes_written += n;
                return Ok(());
            }
        }
    }
    src.read(pos, buf)?;
    stats.bytes_read += n;
    if is_zero(buf) {
        zero_target(dst, pos, n, opts, stats)
    } else {
        dst.inner
            .write_compressed(pos + dst.delta, buf, opts.compress_level)?;
        stats.bytes_written += n;
        Ok(())
    }
}

/// The target seen `delta` bytes further on: the copy loop works in source offsets.
struct Shifted<'a> {
    inner: &'a dyn BlockDriver,
    delta: u64,
}

impl Shifted<'_> {
    fn write(&self, at: u64, buf: &[u8]) -> Result<()> {
        self.inner.write(at + self.delta, buf)
    }

    fn write_zeroes(&self, at: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.inner.write_zeroes(at + self.delta, len, may_unmap)
    }
}

fn zero_target(
    dst: &Shifted,
    start: u64,
    len: u64,
    opts: &CopyOptions,
    stats: &mut CopyStats,
) -> Result<()> {
    stats.bytes_zero += len;
    if !opts.target_zeroed {
        dst.write_zeroes(start, len, true)?;
    }
    Ok(())
}

fn copy_data(
    src: &dyn BlockDriver,
    dst: &Shifted,
    start: u64,
    len: u64,
    opts: &CopyOptions,
    buf: &mut Vec<u8>,
    stats: &mut CopyStats,
) -> Result<()> {
    let mut pos = start;
    let end = start + len;
    while pos < end {
        let n = (end - pos).min(MAX_IO);
        let b = aligned_window(buf, n as usize);
        src.read(pos, b)?;
        stats.bytes_read += n;
        if opts.sparse_size == 0 {
            dst.write(pos, b)?;
            stats.bytes_written += n;
        } else {
            write_sparse(dst, pos, b, opts, stats)?;
        }
        pos += n;
    }
    Ok(())
}

/// `n` bytes of `buf` starting on a 4 KiB boundary, so O_DIRECT files (`cache=none`) take them
/// without a bounce copy.
fn aligned_window(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    crate::direct::aligned_slice(buf, n, 4096)
}

/// Write `data` at `pos`, leaving out zero runs of whole `sparse_size` granules (aligned to
/// absolute guest offsets, so chunking does not change the result).
fn write_sparse(
    dst: &Shifted,
    pos: u64,
    data: &[u8],
    opts: &CopyOptions,
    stats: &mut CopyStats,
) -> Result<()> {
    let g = opts.sparse_size;
    let mut i = 0usize;
    // A leading partial granule is always written as data unless it is zero and the target is zeroed.
    let head = ((g - pos % g) % g).min(data.len() as u64) as usize;
    if head > 0 {
        emit(dst, pos, &data[..head], is_zero(&data[..head]), opts, stats)?;
        i = head;
    }
    while i < data.len() {
        let (zero, run) = run_length(&data[i..], g as usize);
        emit(dst, pos + i as u64, &data[i..i + run], zero, opts, stats)?;
        i += run;
    }
    Ok(())
}

fn emit(
    dst: &Shifted,
    at: u64,
    chunk: &[u8],
    zero: bool,
    opts: &CopyOptions,
    stats: &mut CopyStats,
) -> Result<()> {
    if zero {
        zero_target(dst, at, chunk.len() as u64, opts, stats)
    } else {
        stats.bytes_written += chunk.len() as u64;
        dst.write(at, chunk)
    }
}

/// First guest offset in `[offset, offset+length)` where `a` and `b` differ, if any. Ranges that
/// both chains report as zero are not read.
pub fn compare_range(
    a: &dyn BlockDriver,
    b: &dyn BlockDriver,
    offset: u64,
    length: u64,
) -> Result<Option<u64>> {
    let end = offset + length;
    let mut pos = offset;
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    while pos < end {
        let za = first_extent(a, pos, end - pos)?;
        let zb = first_extent(b, pos, end - pos)?;
        let n = za.1.min(zb.1).min(MAX_IO);
        if za.0 && zb.0 {
            pos += n;
            continue;
        }
        ba.resize(n as usize, 0);
        bb.resize(n as usize, 0);
        a.read(pos, &mut ba)?;
        b.read(pos, &mut bb)?;
        if ba != bb {
            let i = ba
                .iter()
                .zip(bb.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Ok(Some(pos + i as u64));
        }
        pos += n;
    }
    Ok(None)
}

/// First offset in `[offset, offset+length)` of `img` that does not read as zero, if any.
pub fn first_nonzero(img: &dyn BlockDriver, offset: u64, length: u64) -> Result<Option<u64>> {
    let end = offset + length;
    let mut pos = offset;
    let mut buf = Vec::new();
    while pos < end {
        let (zero, len) = first_extent(img, pos, end - pos)?;
        let n = len.min(MAX_IO);
        if !zero {
            buf.resize(n as usize, 0);
            img.read(pos, &mut buf)?;
            if let Some(i) = buf.iter().position(|&x| x != 0) {
                return Ok(Some(pos + i as u64));
            }
        }
        pos += n;
    }
    Ok(None)
}

/// (reads-as-zero, length) of the first extent at `pos`.
fn first_extent(img: &dyn BlockDriver, pos: u64, len: u64) -> Result<(bool, u64)> {
    let ex = map_extents(img, pos, len)?;
    let e = ex.first().ok_or_else(|| {
        crate::Error::new(
            crate::ErrorCode::Internal,
            "block status returned no extent",
        )
    })?;
    let l = (e.start + e.length).saturating_sub(pos).clamp(1, len);
    Ok((e.zero, l))
}
