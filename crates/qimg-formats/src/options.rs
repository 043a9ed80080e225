//! Options shared by every format's open and create paths, already validated by TypeScript and
//! normalized once here.

/// `preallocation=` as qemu-img takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// No preallocation (sparse).
    #[default]
    Off,
    /// Allocate metadata only (qcow2).
    Metadata,
    /// posix_fallocate the data area.
    Falloc,
    /// Write zeros over the data area.
    Full,
}

impl Preallocation {
    /// Parse qemu-img's spelling.
    pub fn parse(s: &str) -> qimg_core::Result<Self> {
        match s {
            "off" => Ok(Self::Off),
            "metadata" => Ok(Self::Metadata),
            "falloc" => Ok(Self::Falloc),
            "full" => Ok(Self::Full),
            _ => Err(qimg_core::Error::invalid(format!(
                "Invalid parameter '{s}'"
            ))),
        }
    }
}

/// Secret bytes (a LUKS passphrase or a legacy qcow AES password), resolved from a `secret`
/// object by TypeScript. Wiped from memory on drop; `Debug` never prints it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncryptionKey(Vec<u8>);

impl EncryptionKey {
    /// Take ownership of the secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Refuse writes; never modify the file (no dirty bits, no repairs).
    pub read_only: bool,
    /// The secret from `key-secret` (luks) or `encrypt.key-secret` (qcow, qcow2), if given.
    pub encryption_key: Option<EncryptionKey>,
    /// `encrypt.format` given at open (`aes`, `luks`): must match what the header says.
    pub encrypt_format: Option<String>,
    /// Metadata only (`info`, QEMU's `BDRV_O_NO_IO`): an encrypted image opens without its key,
    /// and its data cannot be read.
    pub metadata_only: bool,
    /// Set (e.g. by a JavaScript `AbortSignal`) to stop key derivation: the open then fails with
    /// `ERR_QIMG_ABORTED` within milliseconds.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl OpenOptions {
    /// The key-derivation limits for an untrusted image: the default caps and time budget, and
    /// this open's cancel flag.
    pub fn work_limits(&self) -> qimg_crypto::WorkLimits {
        qimg_crypto::WorkLimits {
            cancel: self.cancel.clone(),
            ..Default::default()
        }
    }

    /// QEMU's checks of `encrypt.format` against the header (`header` = the image's format, None
    /// when unencrypted), then the key: returns the key when the data will be read.
    pub fn encryption_key_for(
        &self,
        header: Option<&str>,
    ) -> qimg_core::Result<Option<&EncryptionKey>> {
        match (header, self.encrypt_format.as_deref()) {
            (Some(h), Some(o)) if h != o => {
                return Err(qimg_core::Error::invalid(format!(
                    "Header reported '{h}' encryption format but options specify '{o}'"
                )))
            }
            (None, Some(o)) => {
                return Err(qimg_core::Error::invalid(format!(
                    "No encryption in image header, but options specified format '{o}'"
                )))
            }
            _ => {}
        }
        if header.is_none() || self.metadata_only {
            return Ok(None);
        }
        match &self.encryption_key {
            Some(k) => Ok(Some(k)),
            None => Err(qimg_core::Error::invalid(
                "Parameter 'encrypt.key-secret' is required for cipher",
            )),
        }
    }
}

/// Encryption options at create time: qcow/qcow2 `encrypt.*` (and `encryption=on`), and the
/// luks format's own options under the same names without the `encrypt.` prefix.
#[derive(Debug, Clone, Default)]
pub struct EncryptionCreateOptions {
    /// `encrypt.format=` (`aes`, `luks`); `encryption=on` arrives here as `aes`. None = plain.
    pub format: Option<String>,
    /// The secret from `encrypt.key-secret` / `key-secret`.
    pub key: Option<EncryptionKey>,
    /// The secret's id (for QEMU's "Parameter 'encrypt.key-secret' is required" checks).
    pub key_secret_id: Option<String>,
    /// LUKS `cipher-alg` (`aes-256`, …).
    pub cipher_alg: Option<String>,
    /// LUKS `cipher-mode` (`xts`, `cbc`, `ecb`, `ctr`).
    pub cipher_mode: Option<String>,
    /// LUKS `ivgen-alg` (`plain`, `plain64`, `essiv`).
    pub ivgen_alg: Option<String>,
    /// LUKS `ivgen-hash-alg`.
    pub ivgen_hash_alg: Option<String>,
    /// LUKS `hash-alg` (PBKDF2 / AF hash).
    pub hash_alg: Option<String>,
    /// LUKS `iter-time` in milliseconds.
    pub iter_time: Option<u64>,
}

/// Every create option qimg knows; each format reads the ones it supports and rejects the rest
/// (TypeScript already rejected options a format does not list).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Virtual size in bytes.
    pub size: u64,
    /// `preallocation=`.
    pub preallocation: Preallocation,
    /// raw: set FS_NOCOW_FL (`nocow=on`).
    pub nocow: bool,
    /// qcow2: `compat=0.10|1.1` (None = 1.1).
    pub compat: Option<String>,
    /// qcow2: `cluster_size=` in bytes (None = 65536).
    pub cluster_size: Option<u64>,
    /// qcow2: `refcount_bits=` (None = 16).
    pub refcount_bits: Option<u32>,
    /// qcow2: `lazy_refcounts=on`.
    pub lazy_refcounts: bool,
    /// `backing_file=`.
    pub backing_file: Option<String>,
    /// `backing_fmt=`.
    pub backing_fmt: Option<String>,
    /// qcow2: `extended_l2=on` (refused until the qcow2-parity work).
    pub extended_l2: bool,
    /// qcow2: `compression_type=` (zlib only until the qcow2-parity work).
    pub compression_type: Option<String>,
    /// qcow2: `data_file=`: guest data goes to this external file (created by the caller).
    pub data_file: Option<String>,
    /// qcow2: `data_file_raw=on`: the data file stays a valid raw image (identity mapping).
    pub data_file_raw: bool,
    /// vdi: `static=on` (every block allocated at creation).
    pub static_image: bool,
    /// vpc: `subformat=dynamic|fixed` (None = dynamic).
    pub subformat: Option<String>,
    /// vpc: `force_size=on` (keep the size as given instead of rounding to CHS geometry).
    pub force_size: bool,
    /// qed: `table_size=` in clusters (None = 4).
    pub table_size: Option<u64>,
    /// vmdk: `compat6=on` (virtual hardware version 6).
    pub compat6: bool,
    /// vmdk: `hwversion=` (exclusive with `compat6`).
    pub hwversion: Option<String>,
    /// vmdk: `adapter_type=` (None = ide).
    pub adapter_type: Option<String>,
    /// vmdk: `toolsversion=` (None = 2147483647).
    pub toolsversion: Option<String>,
    /// vmdk: `zeroed_grain=on`.
    pub zeroed_grain: bool,
    /// vhdx: `block_size=` in bytes (None or 0 = automatic, as QEMU).
    pub block_size: Option<u64>,
    /// vhdx: `log_size=` in bytes (None = 1 MiB).
    pub log_size: Option<u64>,
    /// vhdx: `block_state_zero=` (None = on).
    pub block_state_zero: Option<bool>,
    /// Encryption (`encrypt.*`, `encryption=`, luks `key-secret` and friends).
    pub encryption: EncryptionCreateOptions,
}
