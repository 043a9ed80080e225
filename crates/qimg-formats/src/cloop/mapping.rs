//! cloop blocks: locate a block's compressed bytes and inflate them into exactly one block,
//! with the output bounded (a stream that would inflate past the block size is refused).
use flate2::{Decompress, FlushDecompress, Status};
use qimg_core::{Error, Result};

/// Inflate the zlib stream `src` into `dst`, which it must fill exactly.
pub fn inflate_block(src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    let mut z = Decompress::new(true);
    let bad = |why: &str| {
        Error::corrupt(format!(
            "cloop: block {index} does not decompress ({why}), image file is corrupt"
        ))
    };
    let st = z
        .decompress(src, dst, FlushDecompress::Finish)
        .map_err(|e| bad(&e.to_string()))?;
    let out = z.total_out() as usize;
    match st {
        Status::StreamEnd if out == dst.len() => Ok(()),
        Status::StreamEnd => Err(bad(&format!("{out} bytes instead of {}", dst.len()))),
        _ if out == dst.len() => Err(bad("more data than one block")),
        _ => Err(bad("truncated stream")),
    }
}
