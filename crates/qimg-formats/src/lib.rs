//! qimg's image format drivers.
//!
//! One folder per format, with the same file roles in each: `header` (on-disk header types and
//! their bounds), `mapping` (guest → host lookups), `alloc` (space and refcounts), `check`,
//! `create`, and `driver` (the [`qimg_core::BlockDriver`] implementation). [`open_driver`] and
//! [`create_image`] dispatch by format name; TypeScript owns probing and the registry of names.
pub mod blockmap;
pub mod bochs;
pub(crate) mod bytes;
pub mod cloop;
pub mod dmg;
pub mod l2map;
pub mod legacy_aes;
pub mod luks;
pub mod options;
pub mod parallels;
pub mod qcow;
pub mod qcow2;
pub mod qed;
pub mod raw;
pub(crate) mod readonly;
pub mod uuid;
pub mod vdi;
pub mod vpc;

pub use options::{
    CreateOptions, EncryptionCreateOptions, EncryptionKey, OpenOptions, Preallocation,
};
use qimg_core::{BlockDriver, Error, Result, Storage};
use std::sync::Arc;

/// Open the image in `storage` as `format`.
pub fn open_driver(
    format: &str,
    storage: Arc<dyn Storage>,
    opts: &OpenOptions,
) -> Result<Arc<dyn BlockDriver>> {
    match format {
        "raw" => Ok(Arc::new(raw::RawDriver::open(storage, opts)?)),
        "qcow2" => Ok(Arc::new(qcow2::Qcow2Driver::open(storage, opts)?)),
        "vdi" => Ok(Arc::new(vdi::VdiDriver::open(storage, opts)?)),
        "vpc" => Ok(Arc::new(vpc::VpcDriver::open(storage, opts)?)),
        "parallels" => Ok(Arc::new(parallels::ParallelsDriver::open(storage, opts)?)),
        "bochs" => Ok(Arc::new(bochs::BochsDriver::open(storage, opts)?)),
        "cloop" => Ok(Arc::new(cloop::CloopDriver::open(storage, opts)?)),
        "dmg" => Ok(Arc::new(dmg::DmgDriver::open(storage, opts)?)),
        "qed" => Ok(Arc::new(qed::QedDriver::open(storage, opts)?)),
        "qcow" => Ok(Arc::new(qcow::QcowDriver::open(storage, opts)?)),
        "luks" => Ok(Arc::new(luks::LuksDriver::open(storage, opts)?)),
        other => Err(Error::unsupported(format!("Unknown driver '{other}'"))),
    }
}

/// True if `format` can create images encrypted with `enc` (`aes`, `luks`).
fn encryption_supported(format: &str, enc: &str) -> bool {
    matches!(
        (format, enc),
        ("qcow", "aes") | ("qcow2", "aes") | ("qcow2", "luks") | ("luks", "luks")
    )
}

/// Write a new, empty image of `format` into `storage` (already created and truncated to 0).
pub fn create_image(format: &str, storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if let Some(enc) = &opts.encryption.format {
        if !encryption_supported(format, enc) {
            return Err(Error::unsupported(format!(
                "{format}: encryption format '{enc}' is not supported"
            )));
        }
    }
    match format {
        "raw" => raw::create(storage, opts),
        "qcow2" => qcow2::create(storage, opts),
        "vdi" => vdi::create(storage, opts),
        "vpc" => vpc::create(storage, opts),
        "parallels" => parallels::create(storage, opts),
        "qed" => qed::create(storage, opts),
        "qcow" => qcow::create(storage, opts),
        "luks" => luks::create(storage, opts),
        other => Err(Error::unsupported(format!(
            "Format driver '{other}' does not support image creation"
        ))),
    }
}
