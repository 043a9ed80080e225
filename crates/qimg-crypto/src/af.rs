//! The LUKS anti-forensic information splitter (Clemens Fruhwirth's AF-split, as in the LUKS1
//! specification §2.4): a key of `n` bytes becomes `stripes` × `n` bytes such that every stripe
//! is needed to recover it.
//!
//! Diffusion `H` hashes the block in digest-sized pieces: piece `j` becomes the first bytes of
//! `hash(be32(j) ‖ piece_j)`. Split picks random stripes s₀…s₍k−2₎, with d₀ = 0 and
//! dᵢ₊₁ = H(dᵢ ⊕ sᵢ), and sets the last stripe to d₍k−1₎ ⊕ key. Merge recomputes d and XORs.
use crate::hash::HashAlg;
use qimg_core::{Error, Result};

fn diffuse(hash: HashAlg, block: &mut [u8]) {
    let dl = hash.digest_len();
    for (j, piece) in block.chunks_mut(dl).enumerate() {
        let d = hash.digest(&[&(j as u32).to_be_bytes(), piece]);
        let n = piece.len();
        piece.copy_from_slice(&d[..n]);
    }
}

fn check(len: usize, key_len: usize, stripes: u32) -> Result<()> {
    if stripes == 0 || key_len == 0 || len != key_len * stripes as usize {
        return Err(Error::invalid(format!(
            "AF split material of {len} bytes does not hold {stripes} stripes of {key_len} bytes"
        )));
    }
    Ok(())
}

/// Split `key` into `stripes` stripes (`key.len() * stripes` bytes, written to `out`).
pub fn split(hash: HashAlg, key: &[u8], stripes: u32, out: &mut [u8]) -> Result<()> {
    let n = key.len();
    check(out.len(), n, stripes)?;
    crate::random::fill(&mut out[..n * (stripes as usize - 1)])?;
    let mut d = vec![0u8; n];
    let (head, last) = out.split_at_mut(n * (stripes as usize - 1));
    for s in head.chunks_exact(n) {
        for (a, b) in d.iter_mut().zip(s) {
            *a ^= b;
        }
        diffuse(hash, &mut d);
    }
    for ((o, a), b) in last.iter_mut().zip(&d).zip(key) {
        *o = a ^ b;
    }
    Ok(())
}

/// Merge `material` (`key_len * stripes` bytes) back into a `key_len`-byte key.
pub fn merge(hash: HashAlg, material: &[u8], key_len: usize, stripes: u32) -> Result<Vec<u8>> {
    check(material.len(), key_len, stripes)?;
    let mut d = vec![0u8; key_len];
    let (head, last) = material.split_at(key_len * (stripes as usize - 1));
    for s in head.chunks_exact(key_len) {
        for (a, b) in d.iter_mut().zip(s) {
            *a ^= b;
        }
        diffuse(hash, &mut d);
    }
    for (a, b) in d.iter_mut().zip(last) {
        *a ^= b;
    }
    Ok(d)
}
