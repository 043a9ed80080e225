//! Sector encryption shared by the format drivers: the [`SectorCipher`] seam the table engines call,
//! and QEMU's legacy "qcow" cipher (qcow v1 and qcow2 `encrypt.format=aes`).
//!
//! The legacy cipher, as QEMU's `crypto/block-qcow.c` defines it: AES-128-CBC over each 512-byte
//! sector independently; the key is the passphrase's bytes, truncated or zero-padded to 16; the IV
//! is `plain64`: the sector number (guest offset / 512) as a little-endian u64, zero-padded to 16
//! bytes. No header, no key check: a wrong passphrase decrypts to garbage, as in QEMU.
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use qimg_core::{Error, LayerExtent, LayerStatus, Result};

/// Bytes of one encryption sector.
pub const SECTOR: u64 = 512;

/// A per-sector cipher for guest data, applied by a format's data path.
pub trait SectorCipher: Send + Sync {
    /// Encrypt `buf` (whole sectors) in place; `offset` is the byte offset its IVs count from.
    fn encrypt(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Decrypt `buf` (whole sectors) in place; `offset` as for [`SectorCipher::encrypt`].
    fn decrypt(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// True if IVs count host offsets (qcow2 + luks), false for guest offsets (legacy AES).
    fn iv_from_host(&self) -> bool;
}

/// QEMU's legacy qcow AES-128-CBC cipher.
pub struct LegacyAes {
    /// The expanded key, made once (each sector then only sets its IV).
    aes: aes::Aes128,
}

impl LegacyAes {
    /// The cipher for a passphrase (truncated or zero-padded to 16 bytes, as QEMU).
    pub fn new(passphrase: &[u8]) -> Self {
        let mut key = [0u8; 16];
        let n = passphrase.len().min(16);
        key[..n].copy_from_slice(&passphrase[..n]);
        let aes = aes::Aes128::new(&key.into());
        zeroize::Zeroize::zeroize(&mut key);
        LegacyAes { aes }
    }

    fn iv(sector: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&sector.to_le_bytes());
        iv
    }

    fn check(offset: u64, buf: &[u8]) -> Result<()> {
        if !offset.is_multiple_of(SECTOR) || !(buf.len() as u64).is_multiple_of(SECTOR) {
            return Err(Error::invalid(format!(
                "encrypted I/O must cover whole 512-byte sectors (offset {offset}, length {})",
                buf.len()
            )));
        }
        Ok(())
    }
}

type Enc = cbc::Encryptor<aes::Aes128>;
type Dec = cbc::Decryptor<aes::Aes128>;

impl SectorCipher for LegacyAes {
    fn encrypt(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Self::check(offset, buf)?;
        for (i, s) in buf.chunks_exact_mut(SECTOR as usize).enumerate() {
            let iv = Self::iv(offset / SECTOR + i as u64);
            Enc::inner_iv_init(self.aes.clone(), &iv.into())
                .encrypt_padded_mut::<NoPadding>(s, SECTOR as usize)
                .map_err(|_| Error::invalid("AES-CBC: sector is not whole blocks"))?;
        }
        Ok(())
    }

    fn decrypt(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Self::check(offset, buf)?;
        for (i, s) in buf.chunks_exact_mut(SECTOR as usize).enumerate() {
            let iv = Self::iv(offset / SECTOR + i as u64);
            Dec::inner_iv_init(self.aes.clone(), &iv.into())
                .decrypt_padded_mut::<NoPadding>(s)
                .map_err(|_| Error::invalid("AES-CBC: sector is not whole blocks"))?;
        }
        Ok(())
    }

    fn iv_from_host(&self) -> bool {
        false
    }
}

/// Block status of an encrypted image as QEMU reports it: no host offsets (its data is not
/// readable through the file), so nothing is mapped and DATA|ZERO is never inferred.
pub fn hide_offsets(v: Vec<LayerExtent>) -> Vec<LayerExtent> {
    v.into_iter()
        .map(|mut e| {
            e.status = match e.status {
                LayerStatus::Data { compressed, .. } => LayerStatus::Data {
                    host_offset: None,
                    compressed,
                    reads_zero: false,
                },
                LayerStatus::Zero { .. } => LayerStatus::Zero { host_offset: None },
                s => s,
            };
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_iv_depends_on_sector() {
        let c = LegacyAes::new(b"abcd");
        let plain: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        let mut a = plain.clone();
        c.encrypt(512, &mut a).unwrap();
        assert_ne!(a, plain);
        // Same data at a different sector encrypts differently (plain64 IV).
        let mut b = plain[..512].to_vec();
        c.encrypt(0, &mut b).unwrap();
        assert_ne!(&a[..512], &b[..]);
        c.decrypt(512, &mut a).unwrap();
        assert_eq!(a, plain);
        assert!(c.encrypt(100, &mut [0u8; 512]).is_err());
        assert!(c.decrypt(0, &mut [0u8; 100]).is_err());
    }
}
