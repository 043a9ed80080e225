//! Backing-chain operations for `rebase` and `commit`: change an image's backing reference,
//! empty an image into its backing file, the safe-rebase chunk loop; and attaching a qcow2
//! image's external data file.
use crate::error::to_u64;
use crate::image::NativeImage;
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::rebase::{rebase_range as core_rebase, RebaseOptions};

/// Options of one safe-rebase chunk.
#[napi(object)]
pub struct RebaseRangeOptions {
    /// The top image's allocation unit (its cluster size): differences are copied in granules.
    pub granule: f64,
    /// `-c`: write copied clusters compressed.
    pub compress: Option<bool>,
    /// Compressor level with `compress`.
    pub compress_level: Option<u32>,
}

/// What one safe-rebase chunk did.
#[napi(object)]
pub struct RebaseRangeStats {
    /// Bytes compared (unallocated in the top image).
    pub bytes_compared: f64,
    /// Bytes copied into the top image.
    pub bytes_written: f64,
}

/// Copy into `top` (over `[offset, offset+length)`) whatever its current backing chain and
/// `newBase` (`null`: no backing file) read differently, where `top` itself allocates nothing.
#[napi(ts_return_type = "Promise<RebaseRangeStats>")]
pub fn rebase_range(
    top: &NativeImage,
    new_base: Option<&NativeImage>,
    offset: f64,
    length: f64,
    opts: RebaseRangeOptions,
) -> AsyncTask<Work<RebaseRangeStats>> {
    let t = top.driver();
    let b = new_base.map(|b| b.driver());
    spawn(None, move || {
        let base = b.transpose()?;
        let o = RebaseOptions {
            compress: opts.compress.unwrap_or(false),
            compress_level: opts.compress_level,
        };
        let st = core_rebase(
            t?.as_ref(),
            base.as_ref(),
            to_u64(offset, "offset")?,
            to_u64(length, "length")?,
            to_u64(opts.granule, "granule")?,
            &o,
        )?;
        Ok(RebaseRangeStats {
            bytes_compared: st.bytes_compared as f64,
            bytes_written: st.bytes_written as f64,
        })
    })
}

/// Store a new backing file reference in `img` (`null` removes it), after flushing it.
#[napi(ts_return_type = "Promise<void>")]
pub fn set_backing_file(
    img: &NativeImage,
    name: Option<String>,
    format: Option<String>,
) -> AsyncTask<Work<()>> {
    let d = img.driver();
    spawn(None, move || {
        d?.set_backing_file(name.as_deref(), format.as_deref())
    })
}

/// Make every cluster of `img` unallocated, so it reads through to its backing file.
#[napi(ts_return_type = "Promise<void>")]
pub fn make_empty(img: &NativeImage) -> AsyncTask<Work<()>> {
    let d = img.driver();
    spawn(None, move || d?.make_empty())
}

/// Attach `data` (an opened raw image of the external data file) to `img` as the file holding
/// its guest data (qcow2 `data_file`), or detach with `null`.
#[napi]
pub fn attach_data_file(img: &NativeImage, data: Option<&NativeImage>) -> napi::Result<()> {
    let d = img.driver().map_err(crate::error::to_napi)?;
    let storage = match data {
        Some(x) => Some(x.driver().map_err(crate::error::to_napi)?.storage().clone()),
        None => None,
    };
    d.set_data_file(storage).map_err(crate::error::to_napi)
}

/// Extent files a VMDK descriptor names and that still need opening, as written in the image
/// (the graph builder admits each through the implicit-open gate).
#[napi]
pub fn extent_files(img: &NativeImage) -> napi::Result<Vec<String>> {
    Ok(img.driver().map_err(crate::error::to_napi)?.extent_files())
}

/// Attach the opened extent files (raw nodes, in [`extent_files`] order) to a VMDK image.
#[napi]
pub fn attach_extents(img: &NativeImage, files: Vec<&NativeImage>) -> napi::Result<()> {
    let d = img.driver().map_err(crate::error::to_napi)?;
    let mut storages = Vec::with_capacity(files.len());
    for f in files {
        storages.push(f.driver().map_err(crate::error::to_napi)?.storage().clone());
    }
    d.attach_extents(storages).map_err(crate::error::to_napi)
}
