//! Cipher specifications: algorithm × mode × IV generator (× ESSIV hash), parsed from and written
//! to QEMU's option names (`cipher-alg=aes-256`, `cipher-mode=xts`, `ivgen-alg=plain64`,
//! `ivgen-hash-alg=sha256`) and LUKS header strings (`aes` / `xts-plain64`, `cbc-essiv:sha256`).
use crate::hash::HashAlg;
use qimg_core::{Error, Result};

/// A block cipher with its key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherAlg {
    /// AES with a 128-bit key.
    Aes128,
    /// AES with a 192-bit key.
    Aes192,
    /// AES with a 256-bit key.
    Aes256,
    /// Twofish with a 128-bit key.
    Twofish128,
    /// Twofish with a 192-bit key.
    Twofish192,
    /// Twofish with a 256-bit key.
    Twofish256,
    /// Serpent with a 128-bit key.
    Serpent128,
    /// Serpent with a 192-bit key.
    Serpent192,
    /// Serpent with a 256-bit key.
    Serpent256,
    /// CAST5 (CAST-128) with a 128-bit key (64-bit blocks: no XTS).
    Cast5_128,
}

/// The family of a [`CipherAlg`] (the LUKS `cipher_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherFamily {
    /// AES.
    Aes,
    /// Twofish.
    Twofish,
    /// Serpent.
    Serpent,
    /// CAST5.
    Cast5,
}

impl CipherAlg {
    /// Parse QEMU's `cipher-alg` value (`aes-256`, `twofish-128`, `cast5-128`, …).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "aes-128" => Self::Aes128,
            "aes-192" => Self::Aes192,
            "aes-256" => Self::Aes256,
            "twofish-128" => Self::Twofish128,
            "twofish-192" => Self::Twofish192,
            "twofish-256" => Self::Twofish256,
            "serpent-128" => Self::Serpent128,
            "serpent-192" => Self::Serpent192,
            "serpent-256" => Self::Serpent256,
            "cast5-128" => Self::Cast5_128,
            _ => {
                return Err(Error::invalid(format!(
                    "Parameter 'cipher-alg' does not accept value '{name}'"
                )))
            }
        })
    }

    /// QEMU's name for it (`aes-256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128 => "aes-128",
            Self::Aes192 => "aes-192",
            Self::Aes256 => "aes-256",
            Self::Twofish128 => "twofish-128",
            Self::Twofish192 => "twofish-192",
            Self::Twofish256 => "twofish-256",
            Self::Serpent128 => "serpent-128",
            Self::Serpent192 => "serpent-192",
            Self::Serpent256 => "serpent-256",
            Self::Cast5_128 => "cast5-128",
        }
    }

    /// The family.
    pub fn family(self) -> CipherFamily {
        match self {
            Self::Aes128 | Self::Aes192 | Self::Aes256 => CipherFamily::Aes,
            Self::Twofish128 | Self::Twofish192 | Self::Twofish256 => CipherFamily::Twofish,
            Self::Serpent128 | Self::Serpent192 | Self::Serpent256 => CipherFamily::Serpent,
            Self::Cast5_128 => CipherFamily::Cast5,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128 | Self::Twofish128 | Self::Serpent128 | Self::Cast5_128 => 16,
            Self::Aes192 | Self::Twofish192 | Self::Serpent192 => 24,
            Self::Aes256 | Self::Twofish256 | Self::Serpent256 => 32,
        }
    }

    /// Block length in bytes.
    pub fn block_len(self) -> usize {
        if self == Self::Cast5_128 {
            8
        } else {
            16
        }
    }

    /// The algorithm of `family` with a `key_len`-byte key, if there is one.
    pub fn from_family(family: CipherFamily, key_len: usize) -> Result<Self> {
        let alg = match (family, key_len) {
            (CipherFamily::Aes, 16) => Self::Aes128,
            (CipherFamily::Aes, 24) => Self::Aes192,
            (CipherFamily::Aes, 32) => Self::Aes256,
            (CipherFamily::Twofish, 16) => Self::Twofish128,
            (CipherFamily::Twofish, 24) => Self::Twofish192,
            (CipherFamily::Twofish, 32) => Self::Twofish256,
            (CipherFamily::Serpent, 16) => Self::Serpent128,
            (CipherFamily::Serpent, 24) => Self::Serpent192,
            (CipherFamily::Serpent, 32) => Self::Serpent256,
            (CipherFamily::Cast5, 16) => Self::Cast5_128,
            _ => {
                return Err(Error::unsupported(format!(
                    "Unsupported key length {key_len} for cipher {}",
                    family.name()
                )))
            }
        };
        Ok(alg)
    }
}

impl CipherFamily {
    /// The LUKS `cipher_name` (`aes`, `twofish`, `serpent`, `cast5`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes => "aes",
            Self::Twofish => "twofish",
            Self::Serpent => "serpent",
            Self::Cast5 => "cast5",
        }
    }

    /// Parse a LUKS `cipher_name`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "aes" => Ok(Self::Aes),
            "twofish" => Ok(Self::Twofish),
            "serpent" => Ok(Self::Serpent),
            "cast5" => Ok(Self::Cast5),
            _ => Err(Error::unsupported(format!(
                "Unsupported cipher name '{name}'"
            ))),
        }
    }
}

/// A block cipher mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherMode {
    /// Electronic codebook (no IV).
    Ecb,
    /// Cipher block chaining.
    Cbc,
    /// Counter mode, the IV being the first counter block (big-endian increment).
    Ctr,
    /// XEX-based tweaked codebook with ciphertext stealing (whole blocks only here): two keys.
    Xts,
}

impl CipherMode {
    /// Parse QEMU's `cipher-mode`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "ecb" => Ok(Self::Ecb),
            "cbc" => Ok(Self::Cbc),
            "ctr" => Ok(Self::Ctr),
            "xts" => Ok(Self::Xts),
            _ => Err(Error::invalid(format!(
                "Parameter 'cipher-mode' does not accept value '{name}'"
            ))),
        }
    }

    /// The name (`xts`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ecb => "ecb",
            Self::Cbc => "cbc",
            Self::Ctr => "ctr",
            Self::Xts => "xts",
        }
    }
}

/// How each sector's IV is made from its sector number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvGenAlg {
    /// The low 32 bits of the sector number, little-endian, zero-padded.
    Plain,
    /// The 64-bit sector number, little-endian, zero-padded.
    Plain64,
    /// plain64 encrypted with the same cipher family keyed by hash(key).
    Essiv,
}

impl IvGenAlg {
    /// Parse QEMU's `ivgen-alg`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "plain" => Ok(Self::Plain),
            "plain64" => Ok(Self::Plain64),
            "essiv" => Ok(Self::Essiv),
            _ => Err(Error::invalid(format!(
                "Parameter 'ivgen-alg' does not accept value '{name}'"
            ))),
        }
    }

    /// The name (`plain64`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Plain64 => "plain64",
            Self::Essiv => "essiv",
        }
    }
}

/// Everything that decides how sectors are encrypted, minus the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSpec {
    /// The block cipher (for XTS, the size of one of the two keys).
    pub alg: CipherAlg,
    /// The mode.
    pub mode: CipherMode,
    /// IV generator; `None` only for ECB.
    pub ivgen: Option<IvGenAlg>,
    /// ESSIV's hash (only with [`IvGenAlg::Essiv`]).
    pub ivgen_hash: Option<HashAlg>,
}

impl CipherSpec {
    /// Check the combination: XTS needs 16-byte blocks, ESSIV needs a hash whose digest is a key
    /// length of the cipher family, modes other than ECB need an IV generator.
    pub fn validate(&self) -> Result<()> {
        if self.mode == CipherMode::Xts && self.alg.block_len() != 16 {
            return Err(Error::unsupported(format!(
                "Cipher {} does not support XTS mode (its block size is not 16 bytes)",
                self.alg.name()
            )));
        }
        // ECB ignores an IV generator (QEMU writes `ecb-plain64`); the others need one.
        match (self.mode, self.ivgen) {
            (CipherMode::Ecb, _) => {}
            (_, None) => {
                return Err(Error::invalid(format!(
                    "Cipher mode {} needs an IV generator",
                    self.mode.name()
                )))
            }
            _ => {}
        }
        match (self.ivgen, self.ivgen_hash) {
            (Some(IvGenAlg::Essiv), Some(h)) => {
                CipherAlg::from_family(self.alg.family(), h.digest_len()).map_err(|_| {
                    Error::unsupported(format!(
                        "Hash {} cannot key {} for ESSIV (digest length {} bytes)",
                        h.name(),
                        self.alg.family().name(),
                        h.digest_len()
                    ))
                })?;
            }
            (Some(IvGenAlg::Essiv), None) => {
                return Err(Error::invalid("ESSIV needs an IV generator hash"));
            }
            (_, Some(_)) => {
                return Err(Error::invalid(
                    "An IV generator hash is only used with ESSIV",
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Bytes of key material: twice the cipher key for XTS.
    pub fn key_len(&self) -> usize {
        if self.mode == CipherMode::Xts {
            2 * self.alg.key_len()
        } else {
            self.alg.key_len()
        }
    }

    /// The LUKS `cipher_mode` string: `xts-plain64`, `cbc-essiv:sha256`, `ecb`.
    pub fn luks_mode(&self) -> String {
        match (self.ivgen, self.ivgen_hash) {
            (None, _) => self.mode.name().to_string(),
            (Some(IvGenAlg::Essiv), Some(h)) => format!("{}-essiv:{}", self.mode.name(), h.name()),
            (Some(iv), _) => format!("{}-{}", self.mode.name(), iv.name()),
        }
    }

    /// Parse LUKS `cipher_name`, `cipher_mode` and the key length in bytes (`key_bytes`), as
    /// QEMU and cryptsetup do: the key length picks the cipher size (halved for XTS).
    pub fn from_luks(cipher_name: &str, cipher_mode: &str, key_bytes: usize) -> Result<Self> {
        let family = CipherFamily::parse(cipher_name)?;
        let (mode_s, iv_s) = match cipher_mode.split_once('-') {
            Some((m, i)) => (m, Some(i)),
            None => (cipher_mode, None),
        };
        let mode = CipherMode::parse(mode_s)
            .map_err(|_| Error::unsupported(format!("Unsupported cipher mode '{cipher_mode}'")))?;
        let (ivgen, ivgen_hash) = match iv_s {
            None => (None, None),
            Some(s) => match s.split_once(':') {
                Some(("essiv", h)) => (Some(IvGenAlg::Essiv), Some(HashAlg::parse(h)?)),
                Some(_) => {
                    return Err(Error::unsupported(format!(
                        "Unsupported IV generator in '{cipher_mode}'"
                    )))
                }
                None => (
                    Some(IvGenAlg::parse(s).map_err(|_| {
                        Error::unsupported(format!("Unsupported IV generator '{s}'"))
                    })?),
                    None,
                ),
            },
        };
        let alg_key = if mode == CipherMode::Xts {
            if !key_bytes.is_multiple_of(2) {
                return Err(Error::unsupported(format!(
                    "XTS key length {key_bytes} is not even"
                )));
            }
            key_bytes / 2
        } else {
            key_bytes
        };
        let spec = Self {
            alg: CipherAlg::from_family(family, alg_key)?,
            mode,
            ivgen,
            ivgen_hash,
        };
        spec.validate()?;
        Ok(spec)
    }
}
