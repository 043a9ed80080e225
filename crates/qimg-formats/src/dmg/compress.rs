//! Chunk decoders, each filling exactly one chunk's buffer and never more: zlib (flate2),
//! bzip2 (the pure-Rust libbz2-rs), LZFSE (lzfse_rust), LZMA in an xz or .lzma container
//! (lzma-rs) and ADC (below). A stream that would decode past the chunk, stops short of it, or
//! is malformed is refused with `ERR_QIMG_CORRUPT`.
use super::header::kind;
use qimg_core::{Error, Result};
use std::io::{Read, Write};

/// The error for chunk `index`.
fn bad(index: usize, why: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("dmg: chunk {index} does not decompress: {why}"))
}

/// Decode `src` (a chunk of type `k`) into `dst`, which it must fill exactly. A panic inside a
/// third-party decoder on malformed input becomes `ERR_QIMG_CORRUPT` too.
pub fn decode(k: u32, src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_inner(k, src, dst, index)
    }));
    r.unwrap_or_else(|_| Err(bad(index, "the decoder failed on malformed input")))
}

/// [`decode`] without the panic guard.
fn decode_inner(k: u32, src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    match k {
        kind::ZLIB => zlib(src, dst, index),
        kind::BZIP2 => bzip2(src, dst, index),
        kind::ADC => adc(src, dst, index),
        kind::LZFSE => {
            let mut dec = lzfse_rust::LzfseRingDecoder::default();
            read_exact_stream(dec.reader_bytes(src), dst, index)
        }
        kind::LZMA => lzma(src, dst, index),
        other => Err(bad(index, format!("type {other:#x} is not compressed"))),
    }
}

/// zlib: the stream must end exactly at the end of `dst`.
fn zlib(src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    let st = z
        .decompress(src, dst, FlushDecompress::Finish)
        .map_err(|e| bad(index, e))?;
    finish(st == Status::StreamEnd, z.total_out(), dst.len(), index)
}

/// bzip2, bounded the same way.
fn bzip2(src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    let mut d = bzip2::Decompress::new(false);
    let st = d.decompress(src, dst).map_err(|e| bad(index, e))?;
    finish(
        st == bzip2::Status::StreamEnd,
        d.total_out(),
        dst.len(),
        index,
    )
}

/// Check a one-shot decoder's end state.
fn finish(ended: bool, out: u64, want: usize, index: usize) -> Result<()> {
    match (ended, out as usize == want) {
        (true, true) => Ok(()),
        (true, false) => Err(bad(index, format!("{out} bytes instead of {want}"))),
        (false, true) => Err(bad(index, "more data than the chunk holds")),
        (false, false) => Err(bad(index, "truncated stream")),
    }
}

/// Fill `dst` from a decoding reader, then require it to be at its end.
fn read_exact_stream(mut r: impl Read, dst: &mut [u8], index: usize) -> Result<()> {
    let mut got = 0;
    while got < dst.len() {
        match r.read(&mut dst[got..]) {
            Ok(0) => return Err(bad(index, format!("{got} bytes instead of {}", dst.len()))),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(bad(index, e)),
        }
    }
    let mut one = [0u8; 1];
    match r.read(&mut one) {
        Ok(0) => Ok(()),
        Ok(_) => Err(bad(index, "more data than the chunk holds")),
        Err(e) => Err(bad(index, e)),
    }
}

/// A writer into a fixed slice that fails instead of growing.
struct Bounded<'a> {
    /// The destination.
    dst: &'a mut [u8],
    /// Bytes written.
    pos: usize,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.dst.len() - self.pos;
        if buf.len() > room {
            return Err(std::io::Error::other("more data than the chunk holds"));
        }
        self.dst[self.pos..self.pos + buf.len()].copy_from_slice(buf);
        self.pos += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// LZMA: an xz stream (Apple's ULMO chunks) or a legacy .lzma stream.
fn lzma(src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    let want = dst.len();
    let mut w = Bounded { dst, pos: 0 };
    let mut input = src;
    let r = if src.starts_with(b"\xfd7zXZ\0") {
        lzma_rs::xz_decompress(&mut input, &mut w)
    } else {
        let opts = lzma_rs::decompress::Options {
            unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
            memlimit: Some(want),
            allow_incomplete: false,
        };
        lzma_rs::lzma_decompress_with_options(&mut input, &mut w, &opts)
    };
    r.map_err(|e| bad(index, e))?;
    if w.pos != want {
        return Err(bad(index, format!("{} bytes instead of {want}", w.pos)));
    }
    Ok(())
}

/// Apple Data Compression: literal runs (`1lllllll`: l+1 bytes follow), short matches
/// (`0lllllOO OOOOOOOO`: (l>>2)+3 bytes, distance O+1) and long matches (`01llllll O16`: l+4
/// bytes, distance O+1), copied byte by byte from the output so far.
fn adc(src: &[u8], dst: &mut [u8], index: usize) -> Result<()> {
    let (mut i, mut o) = (0usize, 0usize);
    let byte = |i: usize| {
        src.get(i)
            .copied()
            .ok_or_else(|| bad(index, "truncated ADC stream"))
    };
    while o < dst.len() {
        let b = byte(i)?;
        if b & 0x80 != 0 {
            let n = usize::from(b & 0x7f) + 1;
            let lit = src
                .get(i + 1..i + 1 + n)
                .ok_or_else(|| bad(index, "truncated ADC literal"))?;
            dst.get_mut(o..o + n)
                .ok_or_else(|| bad(index, "more data than the chunk holds"))?
                .copy_from_slice(lit);
            i += 1 + n;
            o += n;
            continue;
        }
        let (n, dist) = if b & 0x40 != 0 {
            let d = (usize::from(byte(i + 1)?) << 8) | usize::from(byte(i + 2)?);
            i += 3;
            (usize::from(b & 0x3f) + 4, d + 1)
        } else {
            let d = (usize::from(b & 0x03) << 8) | usize::from(byte(i + 1)?);
            i += 2;
            (usize::from((b & 0x3c) >> 2) + 3, d + 1)
        };
        if dist > o {
            return Err(bad(index, "ADC match reaches before the chunk"));
        }
        if o + n > dst.len() {
            return Err(bad(index, "more data than the chunk holds"));
        }
        for k in 0..n {
            dst[o + k] = dst[o + k - dist];
        }
        o += n;
    }
    Ok(())
}
