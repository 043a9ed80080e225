//! qcow2 `encrypt.format=luks`: a LUKS1 header embedded in the qcow2 file, in clusters the full
//! disk encryption extension points at, unlocked with [`qimg_crypto::luks1`]; data sectors are
//! encrypted with IVs counted from their host offset / 512, as QEMU does.
//!
//! ```text
//! header extension 0x0537be77: u64 offset (cluster aligned), u64 length   (big-endian)
//! [offset, offset+length): LUKS1 phdr (592 bytes) and the eight key slots' material;
//!                          its payload-offset field equals `length`, the payload is unused
//! ```
use crate::legacy_aes::SectorCipher;
use crate::options::{EncryptionCreateOptions, OpenOptions};
use qimg_core::{Error, Result, Storage};
use qimg_crypto::luks1::{self, HeaderIo, Luks1Header, Luks1Params};
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, HashAlg, IvGenAlg};
use std::sync::Arc;

/// Largest embedded LUKS header area accepted: 8 slots of 4000 stripes × 128-byte keys fit in
/// about 16 MiB; anything longer is hostile.
pub const MAX_HEADER_AREA: u64 = 64 << 20;

/// The embedded LUKS header area, as [`HeaderIo`] (offsets relative to its start).
pub(super) struct HeaderArea {
    /// The qcow2 file.
    pub storage: Arc<dyn Storage>,
    /// Host offset of the area.
    pub offset: u64,
    /// Length of the area.
    pub length: u64,
}

impl HeaderIo for HeaderArea {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bound(offset, buf.len())?;
        self.storage.read_at(buf, self.offset + offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.bound(offset, buf.len())?;
        self.storage.write_at(buf, self.offset + offset)
    }

    fn flush(&self) -> Result<()> {
        self.storage.flush()
    }
}

impl HeaderArea {
    fn bound(&self, offset: u64, len: usize) -> Result<()> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|e| e > self.length)
        {
            // QEMU's qcow2_crypto_hdr_read_func wording.
            return Err(Error::corrupt(
                "Request for data outside of extension header",
            ));
        }
        Ok(())
    }
}

/// The LUKS payload cipher seen through the drivers' [`SectorCipher`] seam (host-offset IVs).
struct LuksCipher(qimg_crypto::SectorCipher);

impl SectorCipher for LuksCipher {
    fn encrypt(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.encrypt(offset / 512, buf)
    }

    fn decrypt(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.decrypt(offset / 512, buf)
    }

    fn iv_from_host(&self) -> bool {
        true
    }
}

/// Parse the embedded header; unlock it unless opened for `info` only.
pub(super) fn open(
    storage: &Arc<dyn Storage>,
    area: (u64, u64),
    file_size: u64,
    opts: &OpenOptions,
) -> Result<Opened> {
    let (offset, length) = area;
    if length < luks1::header::HEADER_LEN as u64 || length > MAX_HEADER_AREA {
        return Err(Error::corrupt(format!(
            "qcow2 LUKS header area of {length} bytes is out of bounds"
        )));
    }
    if offset.checked_add(length).is_none_or(|e| e > file_size) {
        return Err(Error::corrupt(format!(
            "qcow2 LUKS header area {offset:#x}+{length:#x} lies outside the file"
        )));
    }
    let (io, h) = read_area(storage, offset, length)?;
    // Every slot's key material must lie inside the area.
    for s in h.slots.iter() {
        let end = (s.key_offset as u64 + s.material_sectors(h.key_bytes)) * luks1::header::SECTOR;
        if end > length {
            return Err(Error::corrupt(
                "Request for data outside of extension header",
            ));
        }
    }
    let info = info_json(&h)?;
    let Some(key) = opts.encryption_key_for(Some("luks"))? else {
        return Ok((None, info, None));
    };
    let unlocked = h.unlock(&io, key.as_bytes(), &opts.work_limits())?;
    let cipher = h.payload_cipher(&unlocked.master_key)?;
    Ok((
        Some(Arc::new(LuksCipher(cipher))),
        info,
        Some(unlocked.master_key),
    ))
}

/// What [`open`] returns: the data cipher and master key (both `None` without a key) and the
/// `encrypt` object of `info`.
pub(super) type Opened = (
    Option<Arc<dyn SectorCipher>>,
    serde_json::Value,
    Option<Vec<u8>>,
);

/// `qemu-img amend -o encrypt.*` on the embedded header: QEMU's luks key slot amend (the
/// `encrypt.` prefix already stripped from `options`), through the bounded header area.
pub(super) fn amend(
    storage: &Arc<dyn Storage>,
    area: (u64, u64),
    master_key: Option<&[u8]>,
    options: &[(String, String)],
) -> Result<()> {
    let (offset, length) = area;
    let (io, mut h) = read_area(storage, offset, length)?;
    crate::luks::amend::amend_luks1(&mut h, &io, master_key, options)
}

/// `info`'s `encrypt` object for a LUKS header, in qemu-img 10's field order.
pub(super) fn info_json(h: &Luks1Header) -> Result<serde_json::Value> {
    let spec = h.cipher_spec()?;
    let mut m = serde_json::Map::new();
    m.insert(
        "ivgen-alg".into(),
        spec.ivgen.map(|i| i.name()).unwrap_or("plain").into(),
    );
    m.insert("detached-header".into(), false.into());
    m.insert("hash-alg".into(), h.hash()?.name().into());
    m.insert("cipher-alg".into(), spec.alg.name().into());
    m.insert("uuid".into(), h.uuid.clone().into());
    if let Some(ih) = spec.ivgen_hash {
        m.insert("ivgen-hash-alg".into(), ih.name().into());
    }
    m.insert("format".into(), "luks".into());
    m.insert("cipher-mode".into(), spec.mode.name().into());
    let slots: Vec<serde_json::Value> = h
        .slots
        .iter()
        .map(|s| {
            let key_offset = s.key_offset as u64 * luks1::header::SECTOR;
            if s.active {
                serde_json::json!({
                    "active": true,
                    "iters": s.iterations,
                    "key-offset": key_offset,
                    "stripes": s.stripes,
                })
            } else {
                serde_json::json!({ "active": false, "key-offset": key_offset })
            }
        })
        .collect();
    m.insert("slots".into(), slots.into());
    m.insert("payload-offset".into(), h.payload_offset_bytes().into());
    m.insert("master-key-iters".into(), h.mk_digest_iter.into());
    Ok(serde_json::Value::Object(m))
}

/// LUKS parameters from `encrypt.*` with QEMU's defaults (aes-256, xts, plain64, sha256, 2 s).
pub(super) fn params(e: &EncryptionCreateOptions) -> Result<Luks1Params> {
    let alg = CipherAlg::parse(e.cipher_alg.as_deref().unwrap_or("aes-256"))?;
    let mode = CipherMode::parse(e.cipher_mode.as_deref().unwrap_or("xts"))?;
    let ivgen = IvGenAlg::parse(e.ivgen_alg.as_deref().unwrap_or("plain64"))?;
    let ivgen_hash = match (ivgen, e.ivgen_hash_alg.as_deref()) {
        (IvGenAlg::Essiv, h) => Some(HashAlg::parse(h.unwrap_or("sha256"))?),
        (_, _) => None,
    };
    let hash = HashAlg::parse(e.hash_alg.as_deref().unwrap_or("sha256"))?;
    let spec = CipherSpec {
        alg,
        mode,
        ivgen: (mode != CipherMode::Ecb).then_some(ivgen),
        ivgen_hash,
    };
    let mut p = Luks1Params::new(spec, hash);
    if let Some(t) = e.iter_time {
        p.iter_time_ms = t;
    }
    Ok(p)
}

/// Bytes the embedded LUKS header area takes for these parameters.
pub(super) fn area_len(p: &Luks1Params) -> u64 {
    luks1::payload_sectors(p.spec.key_len() as u32) as u64 * luks1::header::SECTOR
}

/// Write a new LUKS header (one key slot for `passphrase`) into `[offset, offset+length)`.
pub(super) fn create(
    storage: &Arc<dyn Storage>,
    offset: u64,
    length: u64,
    p: &Luks1Params,
    passphrase: &[u8],
) -> Result<()> {
    let io = HeaderArea {
        storage: storage.clone(),
        offset,
        length,
    };
    luks1::create(p, passphrase, &io).map(|_| ())
}

/// The LUKS1 header area at `offset` (`length` bytes) of the image file, and its parsed header.
fn read_area(
    storage: &Arc<dyn Storage>,
    offset: u64,
    length: u64,
) -> Result<(HeaderArea, Luks1Header)> {
    let io = HeaderArea {
        storage: storage.clone(),
        offset,
        length,
    };
    let mut raw = vec![0u8; luks1::header::HEADER_LEN];
    io.read_at(0, &mut raw)?;
    let h = Luks1Header::parse(&raw)?;
    Ok((io, h))
}
