//! Hash algorithms as LUKS and QEMU name them (`hash-alg`, `ivgen-hash-alg`), with one-shot
//! digests for ESSIV and the anti-forensic diffuser, and HMAC state for PBKDF2.
use digest::Digest;
use qimg_core::{Error, Result};

/// A hash algorithm QEMU's LUKS driver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-224 (28 bytes).
    Sha224,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
    /// RIPEMD-160 (20 bytes).
    Ripemd160,
}

impl HashAlg {
    /// Every algorithm, in QEMU's listing order.
    pub const ALL: [HashAlg; 6] = [
        HashAlg::Sha1,
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Ripemd160,
    ];

    /// Parse QEMU's or cryptsetup's spelling (`sha256`, `ripemd160`), case-insensitively.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Self::Sha1),
            "sha224" => Ok(Self::Sha224),
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            "ripemd160" => Ok(Self::Ripemd160),
            _ => Err(Error::unsupported(format!(
                "Unsupported hash algorithm '{name}'"
            ))),
        }
    }

    /// The name as written in LUKS headers and shown by `qemu-img info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha224 => "sha224",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Ripemd160 => "ripemd160",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 | Self::Ripemd160 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Hash the concatenation of `parts` into a new vector.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Self::Sha1 => run::<sha1::Sha1>(parts),
            Self::Sha224 => run::<sha2::Sha224>(parts),
            Self::Sha256 => run::<sha2::Sha256>(parts),
            Self::Sha384 => run::<sha2::Sha384>(parts),
            Self::Sha512 => run::<sha2::Sha512>(parts),
            Self::Ripemd160 => run::<ripemd::Ripemd160>(parts),
        }
    }
}
