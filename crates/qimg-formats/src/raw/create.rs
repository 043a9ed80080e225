//! Creating a raw image: size the file, preallocate as asked, optionally turn off copy-on-write.
use crate::options::{CreateOptions, Preallocation};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// Write a new raw image of `opts.size` bytes into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'raw' does not support backing files",
        ));
    }
    storage.truncate(0)?;
    match opts.preallocation {
        Preallocation::Off => storage.truncate(opts.size),
        Preallocation::Falloc => storage.allocate(0, opts.size),
        Preallocation::Full => {
            storage.truncate(opts.size)?;
            let chunk = vec![0u8; (1usize << 20).min(opts.size.max(1) as usize)];
            let mut pos = 0u64;
            while pos < opts.size {
                let n = (opts.size - pos).min(chunk.len() as u64) as usize;
                storage.write_at(&chunk[..n], pos)?;
                pos += n as u64;
            }
            Ok(())
        }
        Preallocation::Metadata => Err(Error::invalid("Unsupported preallocation mode 'metadata'")),
    }
}
