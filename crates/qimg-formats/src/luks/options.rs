//! LUKS create options as qemu-img names them (`cipher-alg`, `cipher-mode`, `ivgen-alg`,
//! `ivgen-hash-alg`, `hash-alg`, `iter-time`), shared by the `luks` format and qcow2's
//! `encrypt.*` options (both arrive in [`EncryptionCreateOptions`]).
use crate::options::EncryptionCreateOptions;
use qimg_core::{Error, Result};
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, HashAlg, IvGenAlg};

/// The payload cipher and the PBKDF2 hash `e` describes, QEMU's defaults filling the gaps:
/// `aes-256`, `xts`, `plain64` (ESSIV hashing with `sha256`), `sha256`.
pub fn resolve(e: &EncryptionCreateOptions) -> Result<(CipherSpec, HashAlg)> {
    let alg = CipherAlg::parse(e.cipher_alg.as_deref().unwrap_or("aes-256"))?;
    let mode = CipherMode::parse(e.cipher_mode.as_deref().unwrap_or("xts"))?;
    let hash = HashAlg::parse(e.hash_alg.as_deref().unwrap_or("sha256"))
        .map_err(|_| invalid_value("hash-alg", e.hash_alg.as_deref().unwrap_or("")))?;
    // QEMU keeps the IV generator with ECB too (it writes `ecb-plain64`), unused.
    let ivgen = Some(IvGenAlg::parse(
        e.ivgen_alg.as_deref().unwrap_or("plain64"),
    )?);
    let ivgen_hash = match ivgen {
        Some(IvGenAlg::Essiv) => {
            let name = e.ivgen_hash_alg.as_deref().unwrap_or("sha256");
            Some(HashAlg::parse(name).map_err(|_| invalid_value("ivgen-hash-alg", name))?)
        }
        _ => None,
    };
    let spec = CipherSpec {
        alg,
        mode,
        ivgen,
        ivgen_hash,
    };
    spec.validate()?;
    Ok((spec, hash))
}

fn invalid_value(name: &str, value: &str) -> Error {
    Error::invalid(format!(
        "Parameter '{name}' does not accept value '{value}'"
    ))
}

/// `iter-time` in milliseconds (QEMU's default 2000).
pub fn iter_time_ms(e: &EncryptionCreateOptions) -> Result<u64> {
    match e.iter_time {
        Some(0) => Err(Error::invalid("iter-time must be positive")),
        Some(n) => Ok(n),
        None => Ok(qimg_crypto::luks1::create::DEFAULT_ITER_TIME_MS),
    }
}
