//! The LUKS1 partition header (LUKS On-Disk Format Specification 1.2.3, §2.4), parsed and
//! validated as strictly as cryptsetup and QEMU do.
//!
//! ```text
//! offset  size  field                  (all integers big-endian)
//!      0     6  magic                  "LUKS\xba\xbe"
//!      6     2  version                1
//!      8    32  cipher-name            NUL-terminated, e.g. "aes"
//!     40    32  cipher-mode            NUL-terminated, e.g. "xts-plain64", "cbc-essiv:sha256"
//!     72    32  hash-spec              NUL-terminated, e.g. "sha256"
//!    104     4  payload-offset         start of the encrypted data, in 512-byte sectors
//!    108     4  key-bytes              master key length
//!    112    20  mk-digest              PBKDF2(hash, master key, mk-digest-salt, mk-digest-iter)
//!    132    32  mk-digest-salt
//!    164     4  mk-digest-iter
//!    168    40  uuid                   NUL-terminated text UUID
//!    208  8×48  key slots:
//!                 +0  4  active              0x00AC71F3 enabled, 0x0000DEAD disabled
//!                 +4  4  iterations          PBKDF2 iterations for the passphrase
//!                 +8 32  salt
//!                +40  4  key-material-offset  in 512-byte sectors from the header start
//!                +44  4  stripes              anti-forensic stripes (4000)
//!    592        (end of header)
//! ```
use crate::hash::HashAlg;
use crate::spec::CipherSpec;
use qimg_core::{Error, Result};

/// `LUKS\xba\xbe`.
pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Header length in bytes.
pub const HEADER_LEN: usize = 592;
/// Number of key slots.
pub const NUM_SLOTS: usize = 8;
/// Anti-forensic stripes every slot must use (cryptsetup and QEMU accept no other count).
pub const STRIPES: u32 = 4000;
/// `active` value of an enabled key slot.
pub const SLOT_ENABLED: u32 = 0x00AC_71F3;
/// `active` value of a disabled key slot.
pub const SLOT_DISABLED: u32 = 0x0000_DEAD;
/// LUKS1 sector size: offsets are in these units, and it is the IV unit of the payload.
pub const SECTOR: u64 = 512;
/// Where QEMU and cryptsetup place the first key material: the header area ends here (sectors).
pub const HEADER_SECTORS: u32 = 8;
/// Key material alignment in sectors (4 KiB).
pub const ALIGN_SECTORS: u32 = 8;
/// Largest master key accepted (cryptsetup's limit is 512 bits for XTS-256 pairs; be generous
/// but bounded).
pub const MAX_KEY_BYTES: u32 = 128;

/// One key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// True when the slot holds a key.
    pub active: bool,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: [u8; 32],
    /// Key material start, in sectors from the header start.
    pub key_offset: u32,
    /// Anti-forensic stripes.
    pub stripes: u32,
}

/// A parsed LUKS1 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks1Header {
    /// `cipher-name`.
    pub cipher_name: String,
    /// `cipher-mode`.
    pub cipher_mode: String,
    /// `hash-spec`.
    pub hash_spec: String,
    /// Payload offset in sectors.
    pub payload_offset: u32,
    /// Master key length in bytes.
    pub key_bytes: u32,
    /// Master key digest.
    pub mk_digest: [u8; 20],
    /// Master key digest salt.
    pub mk_digest_salt: [u8; 32],
    /// Master key digest iterations.
    pub mk_digest_iter: u32,
    /// UUID text.
    pub uuid: String,
    /// The eight key slots.
    pub slots: [KeySlot; NUM_SLOTS],
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A NUL-terminated ASCII field; `what` names it in errors.
fn cstr(field: &[u8], what: &str) -> Result<String> {
    let end = field
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| Error::corrupt(format!("LUKS header {what} is not NUL terminated")))?;
    let s = &field[..end];
    if !s.iter().all(|c| c.is_ascii_graphic()) {
        return Err(Error::corrupt(format!(
            "LUKS header {what} contains invalid characters"
        )));
    }
    Ok(String::from_utf8_lossy(s).into_owned())
}

fn put_cstr(out: &mut [u8], s: &str) -> Result<()> {
    if s.len() >= out.len() {
        return Err(Error::invalid(format!(
            "LUKS header string '{s}' is too long"
        )));
    }
    out[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

impl KeySlot {
    /// Key material length in sectors for a `key_bytes` master key.
    pub fn material_sectors(&self, key_bytes: u32) -> u64 {
        (key_bytes as u64 * self.stripes as u64).div_ceil(SECTOR)
    }
}

impl Luks1Header {
    /// True if `first` starts with the LUKS magic and version 1.
    pub fn probe(first: &[u8]) -> bool {
        first.len() >= 8 && first[..6] == MAGIC && first[6..8] == [0, 1]
    }

    /// Parse and validate the first [`HEADER_LEN`] bytes. The payload-offset bound against the
    /// file size is checked separately ([`Self::check_payload`]).
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_LEN {
            return Err(Error::corrupt("LUKS header is truncated"));
        }
        if b[..6] != MAGIC {
            return Err(Error::new(
                qimg_core::ErrorCode::WrongFormat,
                "Volume is not in LUKS format",
            ));
        }
        let version = u16::from_be_bytes([b[6], b[7]]);
        if version != 1 {
            return Err(Error::unsupported(format!(
                "LUKS version {version} is not supported"
            )));
        }
        let slots = std::array::from_fn(|i| {
            let o = 208 + 48 * i;
            let mut salt = [0u8; 32];
            salt.copy_from_slice(&b[o + 8..o + 40]);
            (
                be32(b, o),
                KeySlot {
                    active: be32(b, o) == SLOT_ENABLED,
                    iterations: be32(b, o + 4),
                    salt,
                    key_offset: be32(b, o + 40),
                    stripes: be32(b, o + 44),
                },
            )
        });
        for (i, (raw, _)) in slots.iter().enumerate() {
            if *raw != SLOT_ENABLED && *raw != SLOT_DISABLED {
                return Err(Error::corrupt(format!(
                    "Keyslot {i} state (active/disable) is corrupted"
                )));
            }
        }
        let mut mk_digest = [0u8; 20];
        mk_digest.copy_from_slice(&b[112..132]);
        let mut mk_digest_salt = [0u8; 32];
        mk_digest_salt.copy_from_slice(&b[132..164]);
        let h = Self {
            cipher_name: cstr(&b[8..40], "cipher name")?,
            cipher_mode: cstr(&b[40..72], "cipher mode")?,
            hash_spec: cstr(&b[72..104], "hash specification")?,
            payload_offset: be32(b, 104),
            key_bytes: be32(b, 108),
            mk_digest,
            mk_digest_salt,
            mk_digest_iter: be32(b, 164),
            uuid: cstr(&b[168..208], "UUID")?,
            slots: slots.map(|(_, s)| s),
        };
        h.validate()?;
        Ok(h)
    }

    /// Check every field against the others (the rules of cryptsetup's `LUKS_check_keyslots`
    /// and QEMU's `qcrypto_block_luks_check_header`).
    pub fn validate(&self) -> Result<()> {
        if self.key_bytes == 0 || self.key_bytes > MAX_KEY_BYTES {
            return Err(Error::corrupt(format!(
                "LUKS key length {} is invalid",
                self.key_bytes
            )));
        }
        self.cipher_spec()?;
        self.hash()?;
        if self.mk_digest_iter == 0 {
            return Err(Error::corrupt("LUKS master key digest iterations is zero"));
        }
        if self.payload_offset == 0 {
            return Err(Error::unsupported(
                "LUKS payload offset is zero (detached headers are not supported)",
            ));
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.stripes != STRIPES {
                return Err(Error::corrupt(format!(
                    "Keyslot {i} is corrupted (stripes {} != {STRIPES})",
                    s.stripes
                )));
            }
            if s.active && s.iterations == 0 {
                return Err(Error::corrupt(format!(
                    "Keyslot {i} is corrupted (zero iterations)"
                )));
            }
            if s.key_offset < HEADER_SECTORS {
                return Err(Error::corrupt(format!(
                    "Keyslot {i} is overlapping with the LUKS header"
                )));
            }
            let end = s.key_offset as u64 + s.material_sectors(self.key_bytes);
            if end > self.payload_offset as u64 {
                return Err(Error::corrupt(format!(
                    "Keyslot {i} is overlapping with the encrypted payload"
                )));
            }
            for (j, t) in self.slots.iter().enumerate().skip(i + 1) {
                let t_end = t.key_offset as u64 + t.material_sectors(self.key_bytes);
                if (s.key_offset as u64) < t_end && (t.key_offset as u64) < end {
                    return Err(Error::corrupt(format!(
                        "Keyslots {i} and {j} are overlapping in the header"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Check that the payload starts within a file of `file_len` bytes.
    pub fn check_payload(&self, file_len: u64) -> Result<()> {
        if self.payload_offset as u64 * SECTOR > file_len {
            return Err(Error::corrupt(format!(
                "LUKS payload offset {} is beyond the end of the image ({file_len} bytes)",
                self.payload_offset as u64 * SECTOR
            )));
        }
        Ok(())
    }

    /// The payload's cipher.
    pub fn cipher_spec(&self) -> Result<CipherSpec> {
        CipherSpec::from_luks(
            &self.cipher_name,
            &self.cipher_mode,
            self.key_bytes as usize,
        )
    }

    /// The PBKDF2 / AF hash.
    pub fn hash(&self) -> Result<HashAlg> {
        HashAlg::parse(&self.hash_spec)
    }

    /// Payload offset in bytes.
    pub fn payload_offset_bytes(&self) -> u64 {
        self.payload_offset as u64 * SECTOR
    }

    /// Serialize to the on-disk layout.
    pub fn to_bytes(&self) -> Result<[u8; HEADER_LEN]> {
        let mut b = [0u8; HEADER_LEN];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        put_cstr(&mut b[8..40], &self.cipher_name)?;
        put_cstr(&mut b[40..72], &self.cipher_mode)?;
        put_cstr(&mut b[72..104], &self.hash_spec)?;
        b[104..108].copy_from_slice(&self.payload_offset.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_digest_salt);
        b[164..168].copy_from_slice(&self.mk_digest_iter.to_be_bytes());
        put_cstr(&mut b[168..208], &self.uuid)?;
        for (i, s) in self.slots.iter().enumerate() {
            let o = 208 + 48 * i;
            let active = if s.active {
                SLOT_ENABLED
            } else {
                SLOT_DISABLED
            };
            b[o..o + 4].copy_from_slice(&active.to_be_bytes());
            b[o + 4..o + 8].copy_from_slice(&s.iterations.to_be_bytes());
            b[o + 8..o + 40].copy_from_slice(&s.salt);
            b[o + 40..o + 44].copy_from_slice(&s.key_offset.to_be_bytes());
            b[o + 44..o + 48].copy_from_slice(&s.stripes.to_be_bytes());
        }
        Ok(b)
    }
}
