//! Writing a new LUKS1 header with QEMU's layout: key material for slot `i` at sector
//! 8 + i × (material rounded up to 4 KiB), the payload right after the eighth slot, one random
//! master key, slot 0 (or a chosen slot) holding the passphrase.
use super::header::{
    KeySlot, Luks1Header, ALIGN_SECTORS, HEADER_SECTORS, NUM_SLOTS, SECTOR, STRIPES,
};
use super::keyslot::HeaderIo;
use crate::hash::HashAlg;
use crate::pbkdf2::{iterations_for, pbkdf2};
use crate::spec::CipherSpec;
use crate::work::WorkLimits;
use qimg_core::{Error, Result};

/// QEMU's and cryptsetup's minimum master-key digest iterations.
pub const MIN_MK_ITERATIONS: u32 = 1000;
/// QEMU's and cryptsetup's minimum key slot iterations.
pub const MIN_SLOT_ITERATIONS: u32 = 1000;
/// QEMU's default `iter-time` in milliseconds.
pub const DEFAULT_ITER_TIME_MS: u64 = 2000;

/// What a new LUKS1 header is made of.
#[derive(Debug, Clone)]
pub struct Luks1Params {
    /// Payload cipher.
    pub spec: CipherSpec,
    /// PBKDF2 / AF hash.
    pub hash: HashAlg,
    /// Milliseconds of PBKDF2 work to aim for when an iteration count is not forced.
    pub iter_time_ms: u64,
    /// Force the key slot iteration count.
    pub slot_iterations: Option<u32>,
    /// Force the master key digest iteration count.
    pub mk_iterations: Option<u32>,
    /// Slot to store the passphrase in.
    pub slot: usize,
}

impl Luks1Params {
    /// QEMU's defaults for `spec` and `hash`.
    pub fn new(spec: CipherSpec, hash: HashAlg) -> Self {
        Self {
            spec,
            hash,
            iter_time_ms: DEFAULT_ITER_TIME_MS,
            slot_iterations: None,
            mk_iterations: None,
            slot: 0,
        }
    }
}

/// Sectors the header plus eight slots of key material take for a `key_bytes` key: where the
/// payload starts.
pub fn payload_sectors(key_bytes: u32) -> u32 {
    HEADER_SECTORS + NUM_SLOTS as u32 * slot_stride(key_bytes)
}

fn slot_stride(key_bytes: u32) -> u32 {
    ((key_bytes as u64 * STRIPES as u64).div_ceil(SECTOR) as u32).next_multiple_of(ALIGN_SECTORS)
}

/// Make a new header and master key, and write slot material and the header through `io`.
/// Returns the header and the master key (the caller encrypts the payload with it).
pub fn create(
    params: &Luks1Params,
    passphrase: &[u8],
    io: &dyn HeaderIo,
) -> Result<(Luks1Header, Vec<u8>)> {
    params.spec.validate()?;
    if params.slot >= NUM_SLOTS {
        return Err(Error::invalid(format!(
            "Invalid keyslot {} is specified, must be between 0 and {}",
            params.slot,
            NUM_SLOTS - 1
        )));
    }
    let key_bytes = params.spec.key_len() as u32;
    let mut master_key = vec![0u8; key_bytes as usize];
    crate::random::fill(&mut master_key)?;
    let mut mk_digest_salt = [0u8; 32];
    crate::random::fill(&mut mk_digest_salt)?;
    let iter_time = params.iter_time_ms.max(1);
    let mk_digest_iter = match params.mk_iterations {
        Some(n) => n,
        // QEMU: an eighth of the slot's time, at least 1000.
        None => (iterations_for(params.hash, 20, iter_time, 0)? / 8).max(MIN_MK_ITERATIONS),
    };
    let slot_iterations = match params.slot_iterations {
        Some(n) => n,
        None => iterations_for(
            params.hash,
            key_bytes as usize,
            iter_time,
            MIN_SLOT_ITERATIONS,
        )?,
    };
    let mut mk_digest = [0u8; 20];
    pbkdf2(
        params.hash,
        &master_key,
        &mk_digest_salt,
        mk_digest_iter,
        &mut mk_digest,
        &WorkLimits::unlimited(),
    )?;
    let stride = slot_stride(key_bytes);
    let (name, mode) = (params.spec.alg.family().name(), params.spec.luks_mode());
    let mut header = Luks1Header {
        cipher_name: name.to_string(),
        cipher_mode: mode,
        hash_spec: params.hash.name().to_string(),
        payload_offset: payload_sectors(key_bytes),
        key_bytes,
        mk_digest,
        mk_digest_salt,
        mk_digest_iter,
        uuid: crate::random::uuid_v4()?,
        slots: std::array::from_fn(|i| KeySlot {
            active: false,
            iterations: 0,
            salt: [0; 32],
            key_offset: HEADER_SECTORS + i as u32 * stride,
            stripes: STRIPES,
        }),
    };
    header.validate()?;
    // The header area first (slots all disabled), so a partial create is never openable.
    io.write_at(0, &header.to_bytes()?)?;
    header.set_slot(io, params.slot, &master_key, passphrase, slot_iterations)?;
    Ok((header, master_key))
}
