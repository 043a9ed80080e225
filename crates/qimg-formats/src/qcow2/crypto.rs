//! qcow2 encryption: the header's `crypt_method` (1 legacy AES, 2 LUKS) turned into a data
//! cipher at open, the `encrypt` block of `info`, and the sector-aligned data path helpers.
//!
//! Legacy AES (QEMU's "qcow" crypto format) counts IVs from the guest offset; LUKS counts them
//! from the host offset (QEMU's `crypt_physical_offset`). The LUKS header lives inside the qcow2
//! file, where the full disk encryption extension (0x0537be77) points:
//!
//! ```text
//! Qcow2CryptoHeaderExtension { u64 offset; u64 length; }   /* big-endian, offset cluster-aligned */
//! ```
use super::driver::Qcow2Driver;
use super::header::{self, Header};
use crate::legacy_aes::{LegacyAes, SectorCipher, SECTOR};
use crate::options::{CreateOptions, OpenOptions};
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// What open learned about encryption.
pub(super) struct OpenedCrypto {
    /// Header `crypt_method`.
    pub method: u32,
    /// The data cipher (None when unencrypted or opened for `info` only).
    pub cipher: Option<Arc<dyn SectorCipher>>,
    /// The `encrypt` object of `info`.
    pub info: Option<serde_json::Value>,
    /// The LUKS master key (opened with the key), kept for `amend`'s key slot additions.
    pub master_key: Option<Vec<u8>>,
}

/// Check the header's encryption against the open options and build the data cipher.
pub(super) fn open_crypto(
    storage: &Arc<dyn Storage>,
    h: &Header,
    file_size: u64,
    opts: &OpenOptions,
) -> Result<OpenedCrypto> {
    match h.crypt_method {
        0 => {
            opts.encryption_key_for(None)?;
            Ok(OpenedCrypto {
                method: 0,
                cipher: None,
                info: None,
                master_key: None,
            })
        }
        header::CRYPT_AES => {
            let key = opts.encryption_key_for(Some("aes"))?;
            Ok(OpenedCrypto {
                method: header::CRYPT_AES,
                cipher: key
                    .map(|k| Arc::new(LegacyAes::new(k.as_bytes())) as Arc<dyn SectorCipher>),
                info: Some(serde_json::json!({ "format": "aes" })),
                master_key: None,
            })
        }
        header::CRYPT_LUKS => {
            let Some(area) = h.crypto_header else {
                return Err(Error::corrupt(
                    "qcow2 LUKS encryption without a full disk encryption header extension",
                ));
            };
            let (cipher, info, master_key) = super::luks::open(storage, area, file_size, opts)?;
            Ok(OpenedCrypto {
                method: header::CRYPT_LUKS,
                cipher,
                info: Some(info),
                master_key,
            })
        }
        m => Err(Error::unsupported(format!(
            "Unsupported encryption method: {m}"
        ))),
    }
}

/// The header `crypt_method` for new image options (`encrypt.format`), checked as QEMU does.
pub(super) fn create_method(o: &CreateOptions) -> Result<u32> {
    let e = &o.encryption;
    let Some(f) = e.format.as_deref() else {
        return Ok(0);
    };
    if e.key.is_none() {
        return Err(Error::invalid(
            "Parameter 'encrypt.key-secret' is required for cipher",
        ));
    }
    if o.preallocation != crate::options::Preallocation::Off {
        return Err(Error::unsupported(
            "qimg: preallocation of encrypted qcow2 images is not supported",
        ));
    }
    if o.data_file.is_some() {
        return Err(Error::unsupported(
            "qimg: encrypted qcow2 images with an external data file are not supported",
        ));
    }
    match f {
        "aes" => Ok(header::CRYPT_AES),
        "luks" => {
            super::luks::params(e)?;
            Ok(header::CRYPT_LUKS)
        }
        other => Err(Error::invalid(format!(
            "Parameter 'format' does not accept value '{other}'"
        ))),
    }
}

/// Insert `encrypt` into the `format-specific` data where qemu-img prints it: after
/// `refcount-bits` (and the data file entries that follow it).
pub(super) fn with_encrypt_info(
    data: serde_json::Value,
    info: Option<&serde_json::Value>,
) -> serde_json::Value {
    let (Some(info), serde_json::Value::Object(mut m)) = (info, data.clone()) else {
        return data;
    };
    let all = std::mem::take(&mut m);
    let anchor = if all.contains_key("data-file-raw") {
        "data-file-raw"
    } else {
        "refcount-bits"
    };
    let mut placed = false;
    for (k, v) in all {
        let after = k == anchor;
        m.insert(k, v);
        if after {
            m.insert("encrypt".into(), info.clone());
            placed = true;
        }
    }
    if !placed {
        m.insert("encrypt".into(), info.clone());
    }
    serde_json::Value::Object(m)
}

impl Qcow2Driver {
    /// `amend`'s `encrypt.*` options (prefix stripped), with QEMU's `qcow2_amend_options` checks.
    pub(super) fn amend_encryption(&self, options: &[(String, String)]) -> Result<()> {
        if !self.is_encrypted() {
            return Err(Error::invalid(
                "Can't amend encryption options - encryption not present",
            ));
        }
        if self.crypt_method != header::CRYPT_LUKS {
            return Err(Error::unsupported(
                "Only LUKS encryption options can be amended",
            ));
        }
        let area = self.lock()?.header.crypto_header.ok_or_else(|| {
            Error::corrupt("qcow2 LUKS encryption without a full disk encryption header extension")
        })?;
        super::luks::amend(
            &self.storage,
            area,
            self.luks_master_key.as_deref(),
            options,
        )
    }

    /// True if the header says the data is encrypted.
    pub(super) fn is_encrypted(&self) -> bool {
        self.crypt_method != 0
    }

    /// For an encrypted image: an error when opened without the key, else the whole-sector
    /// range around an unaligned request (None when aligned, or when not encrypted).
    pub(super) fn crypt_unaligned(&self, offset: u64, len: u64) -> Result<Option<(u64, u64)>> {
        if self.crypt_method == 0 {
            return Ok(None);
        }
        if self.cipher.is_none() {
            return Err(Error::invalid(
                "Parameter 'encrypt.key-secret' is required for cipher",
            ));
        }
        if offset.is_multiple_of(SECTOR) && len.is_multiple_of(SECTOR) {
            return Ok(None);
        }
        let lo = offset / SECTOR * SECTOR;
        let hi = (offset + len).next_multiple_of(SECTOR);
        Ok(Some((lo, hi)))
    }

    fn iv_offset(c: &dyn SectorCipher, guest: u64, host: u64) -> u64 {
        if c.iv_from_host() {
            host
        } else {
            guest
        }
    }

    /// Read data stored for guest offset `guest` at `host`, decrypted.
    pub(super) fn read_data(&self, guest: u64, host: u64, buf: &mut [u8]) -> Result<()> {
        self.data_storage()?.read_at(buf, host)?;
        match &self.cipher {
            Some(c) => c
                .decrypt(Self::iv_offset(c.as_ref(), guest, host), buf)
                .map_err(|e| e.with_offset(host)),
            None => Ok(()),
        }
    }

    /// Write data for guest offset `guest` at `host`, encrypted.
    pub(super) fn write_data(&self, guest: u64, host: u64, data: &[u8]) -> Result<()> {
        match &self.cipher {
            Some(c) => {
                let mut enc = data.to_vec();
                c.encrypt(Self::iv_offset(c.as_ref(), guest, host), &mut enc)?;
                self.data_storage()?.write_at(&enc, host)
            }
            None => self.data_storage()?.write_at(data, host),
        }
    }
}
