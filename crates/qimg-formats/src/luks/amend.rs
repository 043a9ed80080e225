//! `qemu-img amend` on LUKS1 headers: add a passphrase to a key slot (`state=active`,
//! `new-secret`, optional `keyslot`, `iter-time`) or erase slots (`state=inactive` with
//! `keyslot` or `old-secret`), with qemu-img 10's refusals and messages (`force` lifts the
//! "last key slot" and "active key slot" guards, as `qemu-img amend --force` does).
//!
//! [`amend_luks1`] works on any [`HeaderIo`], so the luks format (header at offset 0) and
//! qcow2's embedded LUKS header (`encrypt.*` options) share it. TypeScript resolves secret ids
//! and passes the secret bytes base64-encoded under the option names.
use super::driver::{Header, LuksDriver};
use super::header::StorageIo;
use base64::Engine;
use qimg_core::{BlockDriver, Error, Result};
use qimg_crypto::luks1::header::NUM_SLOTS;
use qimg_crypto::luks1::{HeaderIo, Luks1Header};
use qimg_crypto::pbkdf2::iterations_for;
use qimg_crypto::WorkLimits;

fn b64(v: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|_| Error::invalid("Invalid secret encoding"))
}

/// The parsed amend options (QEMU's `QCryptoBlockAmendOptionsLUKS`).
#[derive(Default)]
struct Opts {
    state: Option<String>,
    new_secret: Option<Vec<u8>>,
    old_secret: Option<Vec<u8>>,
    keyslot: Option<i64>,
    iter_time: Option<u64>,
    force: bool,
}

fn parse(options: &[(String, String)]) -> Result<Opts> {
    let mut o = Opts::default();
    for (k, v) in options {
        match k.as_str() {
            "state" => o.state = Some(v.clone()),
            "new-secret" => o.new_secret = Some(b64(v)?),
            "old-secret" => o.old_secret = Some(b64(v)?),
            "keyslot" => {
                o.keyslot = Some(
                    v.parse::<i64>()
                        .map_err(|_| Error::invalid(format!("Parameter '{k}' expects a number")))?,
                )
            }
            "iter-time" => {
                o.iter_time = Some(
                    v.parse::<u64>()
                        .map_err(|_| Error::invalid(format!("Parameter '{k}' expects a number")))?,
                )
            }
            "force" => o.force = v == "on" || v == "true",
            other => return Err(Error::invalid(format!("Invalid parameter '{other}'"))),
        }
    }
    Ok(o)
}

/// The slot index of `keyslot`, range-checked with QEMU's message.
fn slot_index(k: i64) -> Result<usize> {
    if (0..NUM_SLOTS as i64).contains(&k) {
        Ok(k as usize)
    } else {
        Err(Error::invalid(format!(
            "Invalid keyslot {k} specified, must be between 0 and {}",
            NUM_SLOTS - 1
        )))
    }
}

/// Apply LUKS amend `options` to header `h` stored behind `io`. `master_key` is the key the
/// image was opened with (`None`: opened without a key, so no slot can be added).
pub(crate) fn amend_luks1(
    h: &mut Luks1Header,
    io: &dyn HeaderIo,
    master_key: Option<&[u8]>,
    options: &[(String, String)],
) -> Result<()> {
    let o = parse(options)?;
    let limits = WorkLimits::default();
    match o.state.as_deref() {
        Some("active") => {
            if o.old_secret.is_some() {
                return Err(Error::invalid(
                    "'old-secret' must not be given when activating keyslots",
                ));
            }
            let new = o
                .new_secret
                .ok_or_else(|| Error::invalid("'new-secret' is required to activate a keyslot"))?;
            let slot = match o.keyslot {
                Some(k) => {
                    let k = slot_index(k)?;
                    if h.slots[k].active && !o.force {
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
            let mk = master_key.ok_or_else(super::driver::key_required)?;
            let hash = h.hash()?;
            let ms = o
                .iter_time
                .unwrap_or(qimg_crypto::luks1::create::DEFAULT_ITER_TIME_MS);
            let iters = iterations_for(hash, h.key_bytes as usize, ms.max(1), 1000)?;
            h.set_slot(io, slot, mk, &new, iters)
        }
        Some("inactive") => {
            if o.new_secret.is_some() {
                return Err(Error::invalid(
                    "'new-secret' must not be given when erasing keyslots",
                ));
            }
            let slots: Vec<usize> = if let Some(k) = o.keyslot {
                let k = slot_index(k)?;
                if !h.slots[k].active {
                    return Err(Error::invalid(format!(
                        "Given keyslot {k} is already erased (inactive) "
                    )));
                }
                if !o.force && h.active_slots() == 1 {
                    return Err(Error::invalid(format!(
                        "Attempt to erase the only active keyslot {k} which will erase all the data in the image irreversibly - refusing operation"
                    )));
                }
                vec![k]
            } else if let Some(old) = o.old_secret {
                let mut found = Vec::new();
                for i in 0..NUM_SLOTS {
                    if h.try_slot(io, i, &old, &limits)?.is_some() {
                        found.push(i);
                    }
                }
                if found.is_empty() {
                    return Err(Error::invalid(
                        "No keyslots match given (old) password for erase operation",
                    ));
                }
                if !o.force && found.len() == h.active_slots() {
                    return Err(Error::invalid(
                        "All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation",
                    ));
                }
                found
            } else {
                return Err(Error::invalid(
                    "To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given",
                ));
            };
            for s in slots {
                h.erase_slot(io, s)?;
            }
            Ok(())
        }
        Some(other) => Err(Error::invalid(format!(
            "Parameter 'state' does not accept value '{other}'"
        ))),
        None => Err(Error::invalid("Parameter 'state' is missing")),
    }
}

/// Apply LUKS amend options to an opened luks image.
pub(crate) fn amend(d: &LuksDriver, options: &[(String, String)]) -> Result<()> {
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
    amend_luks1(h, &io, d.master_key.as_deref(), options)
}
