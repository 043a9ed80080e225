//! PBKDF2 (RFC 8018) over HMAC with any [`HashAlg`], polling [`WorkLimits`] every few thousand
//! iterations so a hostile iteration count can be cancelled, plus the iteration benchmark QEMU
//! and cryptsetup use to turn `iter-time` (milliseconds) into a count.
use crate::hash::HashAlg;
use crate::work::WorkLimits;
use hmac::{Hmac, Mac};
use qimg_core::{Error, Result};
use std::time::Instant;

/// Iterations between two polls of the limits.
const POLL_EVERY: u32 = 4096;

/// Derive `out.len()` bytes from `password` and `salt` with `iterations` rounds of HMAC-`hash`.
pub fn pbkdf2(
    hash: HashAlg,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
    limits: &WorkLimits,
) -> Result<()> {
    if iterations == 0 {
        return Err(Error::invalid("PBKDF2 iteration count must be positive"));
    }
    limits.check_pbkdf2(iterations)?;
    match hash {
        HashAlg::Sha1 => run::<Hmac<sha1::Sha1>>(password, salt, iterations, out, limits),
        HashAlg::Sha224 => run::<Hmac<sha2::Sha224>>(password, salt, iterations, out, limits),
        HashAlg::Sha256 => run::<Hmac<sha2::Sha256>>(password, salt, iterations, out, limits),
        HashAlg::Sha384 => run::<Hmac<sha2::Sha384>>(password, salt, iterations, out, limits),
        HashAlg::Sha512 => run::<Hmac<sha2::Sha512>>(password, salt, iterations, out, limits),
        HashAlg::Ripemd160 => {
            run::<Hmac<ripemd::Ripemd160>>(password, salt, iterations, out, limits)
        }
    }
}

fn run<M>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
    limits: &WorkLimits,
) -> Result<()>
where
    M: Mac + hmac::digest::KeyInit + Clone,
{
    let prf = <M as Mac>::new_from_slice(password)
        .map_err(|_| Error::invalid("Invalid PBKDF2 password"))?;
    let hlen = <M as hmac::digest::OutputSizeUser>::output_size();
    for (i, block) in out.chunks_mut(hlen).enumerate() {
        let index = u32::try_from(i + 1).map_err(|_| Error::invalid("PBKDF2 output too long"))?;
        let mut mac = prf.clone();
        mac.update(salt);
        mac.update(&index.to_be_bytes());
        let mut u = mac.finalize().into_bytes();
        let mut acc = u.clone();
        for n in 1..iterations {
            if n % POLL_EVERY == 0 {
                limits.poll()?;
            }
            let mut mac = prf.clone();
            mac.update(&u);
            u = mac.finalize().into_bytes();
            for (a, b) in acc.iter_mut().zip(u.iter()) {
                *a ^= b;
            }
        }
        block.copy_from_slice(&acc[..block.len()]);
    }
    Ok(())
}

/// Iterations of PBKDF2-`hash` that take about `millis` milliseconds here for a key of
/// `key_len` bytes (QEMU's `qcrypto_pbkdf2_count_iters`, scaled), at least `min`.
pub fn iterations_for(hash: HashAlg, key_len: usize, millis: u64, min: u32) -> Result<u32> {
    let probe = 1u32 << 14;
    let mut out = vec![0u8; key_len.max(1)];
    let start = Instant::now();
    pbkdf2(
        hash,
        b"qimg-benchmark",
        &[0u8; 32],
        probe,
        &mut out,
        &WorkLimits::unlimited(),
    )?;
    let took = start.elapsed().as_secs_f64().max(1e-6);
    let n = (probe as f64) * (millis as f64 / 1000.0) / took;
    Ok((n.min(u32::MAX as f64) as u32).max(min))
}
