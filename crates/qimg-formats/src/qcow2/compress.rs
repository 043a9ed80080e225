//! Compressed clusters: raw deflate (QEMU writes a 4 KiB window; any inflater reads it) and zstd
//! (one or more frames, possibly followed by padding). Output is bounded by the cluster size.
//!
//! On-disk layout of a compressed L2 entry (x = 62 - (cluster_bits - 8)):
//! ```text
//!   bits 0 .. x-1    host byte offset of the compressed data (not cluster aligned)
//!   bits x .. 61     number of additional 512-byte sectors the data may span
//!   bit  62          1 (compressed)
//!   bit  63          0 (compressed clusters are never COPIED)
//! ```
use qimg_core::{Error, Result};

thread_local! {
    /// Per-thread codec states, reused from cluster to cluster: creating a deflate or zstd
    /// context costs more than compressing a 64 KiB cluster.
    static INFLATE: std::cell::RefCell<Option<flate2::Decompress>> = const { std::cell::RefCell::new(None) };
    static DEFLATE: std::cell::RefCell<Option<(u32, flate2::Compress)>> = const { std::cell::RefCell::new(None) };
    static ZSTD_DECODER: std::cell::RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { std::cell::RefCell::new(None) };
    static ZSTD_ENCODER: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
}

/// Compression type 0 (header field): raw deflate.
pub const ZLIB: u8 = 0;
/// Compression type 1: zstd.
pub const ZSTD: u8 = 1;

/// Host offset and maximum byte length of a compressed cluster's data.
pub fn locate(entry: u64, cluster_bits: u32) -> (u64, u64) {
    let x = 62 - (cluster_bits - 8);
    let off = entry & ((1u64 << x) - 1);
    let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
    (off, sectors * 512 - (off & 511))
}

/// Decompress `input` into exactly `out.len()` bytes (one cluster). Trailing input is ignored,
/// as QEMU does; output that would not fill the cluster is an error.
pub fn decompress(kind: u8, input: &[u8], out: &mut [u8]) -> Result<()> {
    match kind {
        ZLIB => INFLATE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = slot.get_or_insert_with(|| flate2::Decompress::new(false));
            d.reset(false);
            match d.decompress(input, out, flate2::FlushDecompress::Finish) {
                Ok(_) if d.total_out() as usize == out.len() => Ok(()),
                Ok(_) => Err(Error::corrupt(format!(
                    "compressed cluster inflates to {} of {} bytes",
                    d.total_out(),
                    out.len()
                ))),
                Err(e) => Err(Error::corrupt(format!(
                    "compressed cluster does not inflate: {e}"
                ))),
            }
        }),
        ZSTD => ZSTD_DECODER.with(|cell| {
            use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Decoder::new().map_err(|e| Error::corrupt(format!("zstd: {e}")))?);
            }
            let dec = slot
                .as_mut()
                .ok_or_else(|| Error::corrupt("zstd decoder"))?;
            dec.reinit()
                .map_err(|e| Error::corrupt(format!("zstd: {e}")))?;
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(out);
            while outb.pos() < outb.capacity() {
                let before = (inb.pos, outb.pos());
                dec.run(&mut inb, &mut outb).map_err(|e| {
                    Error::corrupt(format!("compressed cluster does not decode (zstd): {e}"))
                })?;
                if (inb.pos, outb.pos()) == before {
                    return Err(Error::corrupt(
                        "compressed cluster ends before the cluster is full (zstd)",
                    ));
                }
            }
            Ok(())
        }),
        k => Err(Error::unsupported(format!("Unknown compression type {k}"))),
    }
}

/// Levels each compression type accepts: zlib 1..=9 (default 6, as QEMU), zstd 1..=22
/// (default 3, as QEMU).
pub fn check_level(kind: u8, level: Option<u32>) -> Result<()> {
    let max = if kind == ZSTD { 22 } else { 9 };
    match level {
        Some(l) if l == 0 || l > max => Err(Error::invalid(format!(
            "Compression level {l} is out of range for {} (1..{max})",
            if kind == ZSTD { "zstd" } else { "zlib" }
        ))),
        _ => Ok(()),
    }
}

/// Compress one cluster: raw deflate with a 4 KiB window (QEMU inflates with window bits -12, so
/// a larger window would write clusters QEMU cannot read), or one zstd frame.
pub fn compress(kind: u8, level: Option<u32>, input: &[u8]) -> Result<Vec<u8>> {
    check_level(kind, level)?;
    match kind {
        ZLIB => DEFLATE.with(|cell| {
            let lvl = level.unwrap_or(6).min(9);
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != lvl) {
                let c = flate2::Compress::new_with_window_bits(
                    flate2::Compression::new(lvl),
                    false,
                    12,
                );
                *slot = Some((lvl, c));
            }
            let (_, c) = slot
                .as_mut()
                .ok_or_else(|| Error::invalid("deflate state"))?;
            c.reset();
            let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 64);
            match c.compress_vec(input, &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => Ok(out),
                // Did not fit: the caller stores the cluster uncompressed.
                Ok(_) => Ok(vec![0u8; input.len() + 1]),
                Err(e) => Err(Error::new(
                    qimg_core::ErrorCode::Internal,
                    format!("deflate: {e}"),
                )),
            }
        }),
        ZSTD => ZSTD_ENCODER.with(|cell| {
            let lvl = level.map_or(3, |l| l as i32);
            let internal = |e: std::io::Error| {
                Error::new(qimg_core::ErrorCode::Internal, format!("zstd: {e}"))
            };
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != lvl) {
                *slot = Some((lvl, zstd::bulk::Compressor::new(lvl).map_err(internal)?));
            }
            let (_, c) = slot
                .as_mut()
                .ok_or_else(|| Error::invalid("zstd encoder"))?;
            c.compress(input).map_err(internal)
        }),
        k => Err(Error::unsupported(format!("Unknown compression type {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn inflates_raw_deflate_with_a_small_window_and_rejects_short_output() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let mut z = e.finish().unwrap();
        z.extend_from_slice(&[0u8; 300]);
        let mut out = vec![0u8; 65536];
        decompress(ZLIB, &z, &mut out).unwrap();
        assert_eq!(out, data);
        let mut big = vec![0u8; 65536 * 2];
        assert_eq!(
            decompress(ZLIB, &z, &mut big).unwrap_err().code,
            qimg_core::ErrorCode::Corrupt
        );
        assert_eq!(
            decompress(ZLIB, &[1, 2, 3], &mut out).unwrap_err().code,
            qimg_core::ErrorCode::Corrupt
        );
    }

    #[test]
    fn compress_round_trips_and_uses_a_4k_window() {
        let data: Vec<u8> = (0..65536u32).map(|i| ((i / 7) % 13) as u8).collect();
        for kind in [ZLIB, ZSTD] {
            let z = compress(kind, None, &data).unwrap();
            assert!(z.len() < data.len() / 4);
            let mut out = vec![0u8; data.len()];
            decompress(kind, &z, &mut out).unwrap();
            assert_eq!(out, data);
        }
        // A 4 KiB-window inflater (what QEMU uses) accepts our deflate stream.
        let z = compress(ZLIB, None, &data).unwrap();
        let mut d = flate2::Decompress::new_with_window_bits(false, 12);
        let mut out = vec![0u8; data.len()];
        d.decompress(&z, &mut out, flate2::FlushDecompress::Finish)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn levels_are_bounded_per_type_and_change_the_output() {
        let data: Vec<u8> = (0..65536u32).map(|i| ((i * 31) % 97) as u8).collect();
        assert!(compress(ZLIB, Some(10), &data).is_err());
        assert!(compress(ZLIB, Some(0), &data).is_err());
        assert!(compress(ZSTD, Some(23), &data).is_err());
        let fast = compress(ZSTD, Some(1), &data).unwrap();
        let best = compress(ZSTD, Some(19), &data).unwrap();
        assert!(best.len() <= fast.len());
        for (kind, z) in [
            (ZSTD, fast),
            (ZLIB, compress(ZLIB, Some(1), &data).unwrap()),
        ] {
            let mut out = vec![0u8; data.len()];
            decompress(kind, &z, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn decodes_several_zstd_frames_with_padding() {
        let a = vec![7u8; 30000];
        let b: Vec<u8> = (0..35536u32).map(|i| (i * 7) as u8).collect();
        let mut z = zstd::bulk::compress(&a, 3).unwrap();
        z.extend(zstd::bulk::compress(&b, 3).unwrap());
        z.extend_from_slice(&[0u8; 100]);
        let mut out = vec![0u8; 65536];
        decompress(ZSTD, &z, &mut out).unwrap();
        assert_eq!(&out[..30000], &a[..]);
        assert_eq!(&out[30000..], &b[..]);
        assert!(decompress(ZSTD, &z[..10], &mut out).is_err());
    }
}
