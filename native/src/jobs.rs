//! Whole-range jobs: the convert copy loop and the compare loop, one call per chunk.
use crate::error::to_u64;
use crate::image::NativeImage;
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::copy::{
    compare_range as core_compare, copy_range as core_copy, first_nonzero, CopyOptions,
};

/// Options of one copy chunk.
#[napi(object)]
pub struct CopyRangeOptions {
    /// `-S` in bytes; 0 writes everything.
    pub sparse_size: f64,
    /// The target already reads as zeros there.
    pub target_zeroed: bool,
    /// Copy only what the first `layers` layers of the source chain allocate (`convert -B`: 1;
    /// `commit`: the layers above the base); everything when absent.
    pub layers: Option<u32>,
    /// `convert -c`: write non-zero clusters compressed.
    pub compress: Option<bool>,
    /// `--compress-level`: compressor level (zlib 1..9, zstd 1..22; default: the format's).
    pub compress_level: Option<u32>,
    /// Threads compressing this chunk's clusters (default 1).
    pub compress_threads: Option<u32>,
}

/// What one copy chunk did.
#[napi(object)]
pub struct CopyRangeStats {
    /// Bytes read.
    pub bytes_read: f64,
    /// Bytes written as data.
    pub bytes_written: f64,
    /// Bytes that were zero.
    pub bytes_zero: f64,
}

/// Copy `[offset, offset+length)` from `src` (through its chain) to `dst` at `dstOffset`
/// (≥ `offset`; larger when several sources are concatenated).
#[napi(ts_return_type = "Promise<CopyRangeStats>")]
pub fn copy_range(
    src: &NativeImage,
    dst: &NativeImage,
    offset: f64,
    length: f64,
    dst_offset: f64,
    opts: CopyRangeOptions,
) -> AsyncTask<Work<CopyRangeStats>> {
    let (s, d) = (src.driver(), dst.driver());
    spawn(None, move || {
        let o = CopyOptions {
            sparse_size: to_u64(opts.sparse_size, "sparse size")?,
            target_zeroed: opts.target_zeroed,
            layers: opts.layers,
            compress: opts.compress.unwrap_or(false),
            compress_level: opts.compress_level,
            compress_threads: opts.compress_threads.unwrap_or(1).clamp(1, 256) as usize,
        };
        let (off, dst_off) = (to_u64(offset, "offset")?, to_u64(dst_offset, "dstOffset")?);
        let delta = dst_off
            .checked_sub(off)
            .ok_or_else(|| qimg_core::Error::invalid("dstOffset must not be below offset"))?;
        let st = core_copy(
            s?.as_ref(),
            d?.as_ref(),
            off,
            to_u64(length, "length")?,
            delta,
            &o,
        )?;
        Ok(CopyRangeStats {
            bytes_read: st.bytes_read as f64,
            bytes_written: st.bytes_written as f64,
            bytes_zero: st.bytes_zero as f64,
        })
    })
}

/// First offset in the range where `a` and `b` differ, or null.
#[napi(ts_return_type = "Promise<number | null>")]
pub fn compare_range(
    a: &NativeImage,
    b: &NativeImage,
    offset: f64,
    length: f64,
) -> AsyncTask<Work<Option<f64>>> {
    let (a, b) = (a.driver(), b.driver());
    spawn(None, move || {
        Ok(core_compare(
            a?.as_ref(),
            b?.as_ref(),
            to_u64(offset, "offset")?,
            to_u64(length, "length")?,
        )?
        .map(|x| x as f64))
    })
}

/// First offset in the range of `img` that is not zero, or null.
#[napi(ts_return_type = "Promise<number | null>")]
pub fn first_nonzero_offset(
    img: &NativeImage,
    offset: f64,
    length: f64,
) -> AsyncTask<Work<Option<f64>>> {
    let d = img.driver();
    spawn(None, move || {
        Ok(first_nonzero(
            d?.as_ref(),
            to_u64(offset, "offset")?,
            to_u64(length, "length")?,
        )?
        .map(|x| x as f64))
    })
}
