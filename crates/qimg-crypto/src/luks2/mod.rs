//! LUKS2 (cryptsetup's default format), read-only: the binary header and JSON metadata
//! ([`header`]), key slots with PBKDF2, Argon2i or Argon2id, the LUKS1 anti-forensic split, and
//! one `crypt` segment. QEMU refuses LUKS2; qimg reads it for data liberation.
//!
//! Every JSON number that sizes an allocation or an offset is bounded before use: key sizes
//! ≤ 128 bytes, 4000 stripes, areas within the file, Argon2 cost under [`WorkLimits`].
pub mod header;

use crate::af;
use crate::cipher::SectorCipher;
use crate::hash::HashAlg;
use crate::luks1::{wrong_passphrase, HeaderIo};
use crate::pbkdf2::pbkdf2;
use crate::spec::CipherSpec;
use crate::work::WorkLimits;
use base64::Engine;
use qimg_core::{Error, Result};
use serde_json::{json, Value};

/// Largest key accepted.
const MAX_KEY: u64 = 128;

/// Key derivation of a key slot.
#[derive(Debug, Clone)]
pub enum Kdf {
    /// PBKDF2.
    Pbkdf2 {
        /// Hash.
        hash: HashAlg,
        /// Iterations.
        iterations: u32,
        /// Salt.
        salt: Vec<u8>,
    },
    /// Argon2i or Argon2id.
    Argon2 {
        /// True for Argon2id.
        id: bool,
        /// Passes.
        time: u32,
        /// Memory in KiB.
        memory: u32,
        /// Lanes.
        cpus: u32,
        /// Salt.
        salt: Vec<u8>,
    },
}

/// One key slot.
#[derive(Debug, Clone)]
pub struct Keyslot {
    /// Its id in the JSON.
    pub id: String,
    /// Master key length.
    pub key_size: usize,
    /// AF stripes.
    pub stripes: u32,
    /// AF hash.
    pub af_hash: HashAlg,
    /// Key material area offset (bytes from the header start).
    pub area_offset: u64,
    /// Key material area size.
    pub area_size: u64,
    /// Area cipher (e.g. `aes-xts-plain64`) with the area key size.
    pub area_spec: CipherSpec,
    /// The KDF.
    pub kdf: Kdf,
}

/// The data segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Payload offset in bytes.
    pub offset: u64,
    /// Payload size, or `None` for `dynamic` (to the end of the file).
    pub size: Option<u64>,
    /// Encryption sector size.
    pub sector_size: usize,
    /// Cipher spec string (`aes-xts-plain64`).
    pub encryption: String,
}

/// A digest that verifies master keys.
#[derive(Debug, Clone)]
pub struct Digest {
    /// Key slots it covers.
    pub keyslots: Vec<String>,
    /// PBKDF2 hash.
    pub hash: HashAlg,
    /// Iterations.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// Expected digest.
    pub digest: Vec<u8>,
}

/// A parsed LUKS2 header.
#[derive(Debug, Clone)]
pub struct Luks2Header {
    /// Binary header fields.
    pub bin: header::BinHeader,
    /// Key slots (only `luks2` type).
    pub keyslots: Vec<Keyslot>,
    /// The first crypt segment.
    pub segment: Option<Segment>,
    /// Digests.
    pub digests: Vec<Digest>,
}

fn corrupt(m: impl Into<String>) -> Error {
    Error::corrupt(format!("LUKS2 metadata: {}", m.into()))
}

fn get<'a>(v: &'a Value, k: &str) -> Result<&'a Value> {
    v.get(k).ok_or_else(|| corrupt(format!("missing '{k}'")))
}

fn s<'a>(v: &'a Value, k: &str) -> Result<&'a str> {
    get(v, k)?
        .as_str()
        .ok_or_else(|| corrupt(format!("'{k}' is not a string")))
}

/// A u64 stored as a JSON string (LUKS2's convention for offsets and sizes) or number.
fn num(v: &Value, k: &str) -> Result<u64> {
    let x = get(v, k)?;
    x.as_u64()
        .or_else(|| x.as_str().and_then(|t| t.parse().ok()))
        .ok_or_else(|| corrupt(format!("'{k}' is not a number")))
}

fn u32f(v: &Value, k: &str) -> Result<u32> {
    u32::try_from(num(v, k)?).map_err(|_| corrupt(format!("'{k}' is out of range")))
}

fn b64(v: &Value, k: &str) -> Result<Vec<u8>> {
    let t = s(v, k)?;
    if t.len() > 1024 {
        return Err(corrupt(format!("'{k}' is too long")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|_| corrupt(format!("'{k}' is not base64")))
}

/// Split `aes-xts-plain64` into the LUKS1-style name and mode.
fn spec_of(encryption: &str, key_size: usize) -> Result<CipherSpec> {
    let (name, mode) = encryption
        .split_once('-')
        .ok_or_else(|| Error::unsupported(format!("Unsupported LUKS2 cipher '{encryption}'")))?;
    CipherSpec::from_luks(name, mode, key_size)
}

fn parse_keyslot(id: &str, v: &Value, file_len: u64) -> Result<Option<Keyslot>> {
    if s(v, "type")? != "luks2" {
        return Ok(None);
    }
    let key_size = num(v, "key_size")?;
    if key_size == 0 || key_size > MAX_KEY {
        return Err(corrupt(format!(
            "keyslot {id} key size {key_size} is invalid"
        )));
    }
    let af_v = get(v, "af")?;
    if s(af_v, "type")? != "luks1" {
        return Err(Error::unsupported("Unsupported LUKS2 anti-forensic type"));
    }
    let stripes = u32f(af_v, "stripes")?;
    if stripes != 4000 {
        return Err(corrupt(format!("keyslot {id} stripes {stripes} != 4000")));
    }
    let af_hash = HashAlg::parse(s(af_v, "hash")?)?;
    let area = get(v, "area")?;
    if s(area, "type")? != "raw" {
        return Err(Error::unsupported("Unsupported LUKS2 keyslot area type"));
    }
    let area_offset = num(area, "offset")?;
    let area_size = num(area, "size")?;
    let area_key = num(area, "key_size")?;
    if area_key == 0 || area_key > MAX_KEY {
        return Err(corrupt(format!("keyslot {id} area key size is invalid")));
    }
    let need = (key_size * stripes as u64).div_ceil(512) * 512;
    if area_size < need || area_size > 64 << 20 {
        return Err(corrupt(format!(
            "keyslot {id} area size {area_size} is invalid"
        )));
    }
    if area_offset
        .checked_add(area_size)
        .is_none_or(|e| e > file_len)
    {
        return Err(corrupt(format!(
            "keyslot {id} area is beyond the end of the image"
        )));
    }
    let area_spec = spec_of(s(area, "encryption")?, area_key as usize)?;
    let k = get(v, "kdf")?;
    let kdf = match s(k, "type")? {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: HashAlg::parse(s(k, "hash")?)?,
            iterations: u32f(k, "iterations")?,
            salt: b64(k, "salt")?,
        },
        t @ ("argon2i" | "argon2id") => Kdf::Argon2 {
            id: t == "argon2id",
            time: u32f(k, "time")?,
            memory: u32f(k, "memory")?,
            cpus: u32f(k, "cpus")?,
            salt: b64(k, "salt")?,
        },
        t => return Err(Error::unsupported(format!("Unsupported LUKS2 KDF '{t}'"))),
    };
    Ok(Some(Keyslot {
        id: id.to_string(),
        key_size: key_size as usize,
        stripes,
        af_hash,
        area_offset,
        area_size,
        area_spec,
        kdf,
    }))
}

/// Argon2 cannot be interrupted from inside: it runs on its own thread while this one polls
/// `limits` every 10 ms, so a cancel or the deadline returns `ERR_QIMG_ABORTED` at once (the
/// abandoned hash finishes in the background, within the caps on its cost, and is discarded).
fn argon2_cancellable(
    alg: argon2::Algorithm,
    params: argon2::Params,
    pass: &[u8],
    salt: &[u8],
    mut out: Vec<u8>,
    limits: &WorkLimits,
) -> Result<Vec<u8>> {
    let (pass, salt) = (zeroize::Zeroizing::new(pass.to_vec()), salt.to_vec());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("qimg-argon2".into())
        .spawn(move || {
            let r = argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                .hash_password_into(&pass, &salt, &mut out)
                .map(|()| out);
            // The receiver may be gone (cancelled): nothing to do then.
            let _ = tx.send(r);
        })
        .map_err(|e| {
            Error::new(
                qimg_core::ErrorCode::Internal,
                format!("Argon2 thread: {e}"),
            )
        })?;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(10)) {
            Ok(r) => return r.map_err(|e| corrupt(format!("Argon2: {e}"))),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => limits.poll()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new(
                    qimg_core::ErrorCode::Internal,
                    "Argon2 thread ended without a result",
                ))
            }
        }
    }
}

impl Luks2Header {
    /// Read and validate the header of an image of `file_len` bytes.
    pub fn read(io: &dyn HeaderIo, file_len: u64) -> Result<Self> {
        let (bin, j) = header::read_area(io, file_len)?;
        let mut keyslots = Vec::new();
        if let Some(ks) = get(&j, "keyslots")?.as_object() {
            if ks.len() > 32 {
                return Err(corrupt("too many keyslots"));
            }
            for (id, v) in ks {
                if let Some(k) = parse_keyslot(id, v, file_len)? {
                    keyslots.push(k);
                }
            }
        }
        let mut segment = None;
        if let Some(segs) = get(&j, "segments")?.as_object() {
            if let Some(v) = segs
                .values()
                .find(|v| v.get("type") == Some(&json!("crypt")))
            {
                let offset = num(v, "offset")?;
                let size = match s(v, "size") {
                    Ok("dynamic") => None,
                    _ => Some(num(v, "size")?),
                };
                let sector_size = num(v, "sector_size")?;
                if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
                    return Err(corrupt(format!("sector size {sector_size} is invalid")));
                }
                if num(v, "iv_tweak").unwrap_or(0) != 0 {
                    return Err(Error::unsupported("LUKS2 segments with an IV tweak"));
                }
                if offset < bin.hdr_size
                    || offset % 512 != 0
                    || offset > file_len
                    || size.is_some_and(|n| offset.checked_add(n).is_none_or(|e| e > file_len))
                {
                    return Err(corrupt("segment is outside the image"));
                }
                segment = Some(Segment {
                    offset,
                    size,
                    sector_size: sector_size as usize,
                    encryption: s(v, "encryption")?.to_string(),
                });
            }
        }
        let mut digests = Vec::new();
        if let Some(ds) = get(&j, "digests")?.as_object() {
            for v in ds.values() {
                if s(v, "type")? != "pbkdf2" {
                    continue;
                }
                let keyslots = get(v, "keyslots")?
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                digests.push(Digest {
                    keyslots,
                    hash: HashAlg::parse(s(v, "hash")?)?,
                    iterations: u32f(v, "iterations")?,
                    salt: b64(v, "salt")?,
                    digest: b64(v, "digest")?,
                });
            }
        }
        Ok(Self {
            bin,
            keyslots,
            segment,
            digests,
        })
    }

    /// The data segment (required to open the payload).
    pub fn segment(&self) -> Result<&Segment> {
        self.segment
            .as_ref()
            .ok_or_else(|| Error::unsupported("LUKS2 image has no crypt segment"))
    }

    fn derive(&self, k: &Keyslot, pass: &[u8], limits: &WorkLimits) -> Result<Vec<u8>> {
        let mut out = vec![0u8; k.area_spec.key_len()];
        match &k.kdf {
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            } => pbkdf2(*hash, pass, salt, *iterations, &mut out, limits)?,
            Kdf::Argon2 {
                id,
                time,
                memory,
                cpus,
                salt,
            } => {
                if *memory > limits.max_argon2_memory_kib || *time > limits.max_argon2_time {
                    return Err(Error::unsupported(format!(
                        "Argon2 cost (memory {memory} KiB, time {time}) exceeds the limits"
                    )));
                }
                limits.poll()?;
                let params = argon2::Params::new(*memory, *time, (*cpus).clamp(1, 16), None)
                    .map_err(|e| corrupt(format!("Argon2 parameters: {e}")))?;
                let alg = if *id {
                    argon2::Algorithm::Argon2id
                } else {
                    argon2::Algorithm::Argon2i
                };
                out = argon2_cancellable(alg, params, pass, salt, out, limits)?;
            }
        }
        Ok(out)
    }

    /// Try every key slot with `pass`; returns the master key.
    pub fn unlock(&self, io: &dyn HeaderIo, pass: &[u8], limits: &WorkLimits) -> Result<Vec<u8>> {
        for k in &self.keyslots {
            let key = self.derive(k, pass, limits)?;
            let mut area = vec![0u8; (k.key_size * k.stripes as usize).div_ceil(512) * 512];
            io.read_at(k.area_offset, &mut area)?;
            SectorCipher::new(k.area_spec, &key, 512)?.decrypt(0, &mut area)?;
            let mk = af::merge(
                k.af_hash,
                &area[..k.key_size * k.stripes as usize],
                k.key_size,
                k.stripes,
            )?;
            for d in self.digests.iter().filter(|d| d.keyslots.contains(&k.id)) {
                let mut got = vec![0u8; d.digest.len().clamp(1, 64)];
                pbkdf2(d.hash, &mk, &d.salt, d.iterations, &mut got, limits)?;
                if got == d.digest {
                    return Ok(mk);
                }
            }
        }
        Err(wrong_passphrase())
    }

    /// The payload cipher for `master_key`.
    pub fn payload_cipher(&self, master_key: &[u8]) -> Result<SectorCipher> {
        let seg = self.segment()?;
        let spec = spec_of(&seg.encryption, master_key.len())?;
        SectorCipher::new(spec, master_key, seg.sector_size)
    }

    /// An `info` block in the spirit of qemu-img's LUKS1 one (QEMU has none for LUKS2).
    pub fn info(&self) -> Value {
        let seg = self.segment.as_ref();
        let spec = seg.and_then(|s| {
            let mk = self.keyslots.first().map(|k| k.key_size).unwrap_or(64);
            spec_of(&s.encryption, mk).ok()
        });
        let slots: Vec<Value> = self
            .keyslots
            .iter()
            .map(|k| {
                let kdf = match &k.kdf {
                    Kdf::Pbkdf2 { .. } => "pbkdf2",
                    Kdf::Argon2 { id: true, .. } => "argon2id",
                    Kdf::Argon2 { id: false, .. } => "argon2i",
                };
                json!({"id": k.id, "active": true, "kdf": kdf, "key-offset": k.area_offset})
            })
            .collect();
        let mut m = serde_json::Map::new();
        m.insert("version".into(), json!(2));
        if let Some(sp) = spec {
            if let Some(iv) = sp.ivgen {
                m.insert("ivgen-alg".into(), json!(iv.name()));
            }
            m.insert("cipher-alg".into(), json!(sp.alg.name()));
            m.insert("cipher-mode".into(), json!(sp.mode.name()));
        }
        m.insert("uuid".into(), json!(self.bin.uuid));
        if let Some(sg) = seg {
            m.insert("sector-size".into(), json!(sg.sector_size));
            m.insert("payload-offset".into(), json!(sg.offset));
        }
        m.insert("slots".into(), Value::Array(slots));
        Value::Object(m)
    }
}
