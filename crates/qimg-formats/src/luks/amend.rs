//! `qemu-img amend` on LUKS1 images: add a passphrase to a key slot (`state=active`,
//! `new-secret`, optional `keyslot`, `old-secret`, `iter-time`) or erase slots
//! (`state=inactive` with `keyslot` or `old-secret`), with QEMU's refusals. TypeScript resolves
//! secret ids and passes the secret bytes base64-encoded under the option names.
use super::driver::{Header, LuksDriver};
use super::header::StorageIo;
use base64::Engine;
use qimg_core::{BlockDriver, Error, Result};
use qimg_crypto::luks1::header::NUM_SLOTS;
use qimg_crypto::pbkdf2::iterations_for;
use qimg_crypto::WorkLimits;

fn b64(v: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|_| Error::invalid("Invalid secret encoding"))
}

/// Apply LUKS amend options to an opened (unlocked) image.
pub(crate) fn amend(d: &LuksDriver, options: &[(String, String)]) -> Result<()> {
    let mut state = None;
    let mut new_secret = None;
    let mut old_secret = None;
    let mut keyslot = None;
    let mut iter_time = None;
    for (k, v) in options {
        match k.as_str() {
            "state" => state = Some(v.clone()),
            "new-secret" => new_secret = Some(b64(v)?),
            "old-secret" => old_secret = Some(b64(v)?),
            "keyslot" => {
                keyslot = Some(v.parse::<usize>().map_err(|_| {
                    Error::invalid(format!("Parameter 'keyslot' expects an integer, not '{v}'"))
                })?)
            }
            "iter-time" => {
                iter_time = Some(v.parse::<u64>().map_err(|_| {
                    Error::invalid(format!("Parameter 'iter-time' expects a number, not '{v}'"))
                })?)
            }
            other => {
                return Err(Error::invalid(format!(
                    "Invalid parameter '{other}' for luks amend"
                )))
            }
        }
    }
    if let Some(k) = keyslot {
        if k >= NUM_SLOTS {
            return Err(Error::invalid(format!(
                "Invalid keyslot {k} is specified, must be between 0 and {}",
                NUM_SLOTS - 1
            )));
        }
    }
    let mut guard = d
        .header
        .lock()
        .map_err(|_| Error::new(qimg_core::ErrorCode::Internal, "lock poisoned"))?;
    let Header::V1(h) = &mut *guard else {
        return Err(Error::unsupported("Amending LUKS2 images is not supported"));
    };
    let storage = d.storage().clone();
    let io = StorageIo {
        storage: &*storage,
        base: 0,
    };
    let limits = WorkLimits::default();
    match state.as_deref() {
        Some("active") => {
            let new = new_secret
                .ok_or_else(|| Error::invalid("'new-secret' is required to activate a keyslot"))?;
            let mk = match old_secret {
                Some(old) => h.unlock(&io, &old, &limits)?.master_key,
                None => d
                    .master_key
                    .clone()
                    .ok_or_else(super::driver::key_required)?,
            };
            let slot = match keyslot {
                Some(k) => {
                    if h.slots[k].active {
                        return Err(Error::invalid(format!(
                            "Refusing to overwrite active keyslot {k} - please erase it first"
                        )));
                    }
                    k
                }
                None => h.slots.iter().position(|s| !s.active).ok_or_else(|| {
                    Error::invalid("Can't add a keyslot - all keyslots are in use")
                })?,
            };
            let hash = h.hash()?;
            let ms = iter_time.unwrap_or(qimg_crypto::luks1::create::DEFAULT_ITER_TIME_MS);
            let iters = iterations_for(hash, h.key_bytes as usize, ms.max(1), 1000)?;
            h.set_slot(&io, slot, &mk, &new, iters)
        }
        Some("inactive") => {
            if new_secret.is_some() {
                return Err(Error::invalid(
                    "'new-secret' must not be given when erasing keyslots",
                ));
            }
            let slots: Vec<usize> = match (keyslot, old_secret) {
                (Some(_), Some(_)) | (None, None) => return Err(Error::invalid(
                    "Exactly one of 'keyslot' or 'old-secret' must be given when erasing keyslots",
                )),
                (Some(k), None) => {
                    if !h.slots[k].active {
                        return Err(Error::invalid(format!(
                            "Given keyslot {k} is already erased (inactive) "
                        )));
                    }
                    vec![k]
                }
                (None, Some(old)) => {
                    let mut found = Vec::new();
                    for i in 0..NUM_SLOTS {
                        if h.try_slot(&io, i, &old, &limits)?.is_some() {
                            found.push(i);
                        }
                    }
                    if found.is_empty() {
                        return Err(Error::invalid(
                            "Didn't erase a keyslot, because no keyslots match the given password",
                        ));
                    }
                    found
                }
            };
            if slots.len() >= h.active_slots() {
                return Err(Error::invalid(format!(
                    "Attempt to erase the only active keyslot {} which will erase all the data in the image irreversibly - refusing operation",
                    slots[0]
                )));
            }
            for s in slots {
                h.erase_slot(&io, s)?;
            }
            Ok(())
        }
        Some(other) => Err(Error::invalid(format!(
            "Parameter 'state' does not accept value '{other}'"
        ))),
        None => Err(Error::invalid("Parameter 'state' is required")),
    }
}
