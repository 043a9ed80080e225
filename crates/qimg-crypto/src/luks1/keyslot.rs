//! LUKS1 key slots: unlock the master key with a passphrase, write a slot for a passphrase,
//! erase a slot. Key material is reached through [`HeaderIo`], with offsets relative to the
//! start of the LUKS header, so the same code serves a `luks` file (header at 0) and a qcow2
//! image that embeds the header at some cluster.
use super::header::{KeySlot, Luks1Header, NUM_SLOTS, SECTOR};
use crate::af;
use crate::cipher::SectorCipher;
use crate::pbkdf2::pbkdf2;
use crate::work::WorkLimits;
use qimg_core::{Error, Result};

/// Byte access to the area holding a LUKS header and its key material.
pub trait HeaderIo {
    /// Read `buf.len()` bytes at `offset` (relative to the header start).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Write `buf` at `offset` (relative to the header start).
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Make what was written durable.
    fn flush(&self) -> Result<()>;
}

/// A master key recovered from a key slot.
#[derive(Clone)]
pub struct Unlocked {
    /// The master (volume) key.
    pub master_key: Vec<u8>,
    /// The slot that opened.
    pub slot: usize,
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// The error for a passphrase no slot accepts (QEMU's wording).
pub fn wrong_passphrase() -> Error {
    Error::invalid("Invalid password, cannot unlock any keyslot")
}

impl Luks1Header {
    /// Whether `master_key` matches the header's master key digest.
    pub fn verify_master_key(&self, master_key: &[u8], limits: &WorkLimits) -> Result<bool> {
        let mut d = [0u8; 20];
        pbkdf2(
            self.hash()?,
            master_key,
            &self.mk_digest_salt,
            self.mk_digest_iter,
            &mut d,
            limits,
        )?;
        Ok(d == self.mk_digest)
    }

    /// Try one slot: `Ok(None)` if the passphrase does not open it.
    pub fn try_slot(
        &self,
        io: &dyn HeaderIo,
        slot: usize,
        passphrase: &[u8],
        limits: &WorkLimits,
    ) -> Result<Option<Vec<u8>>> {
        let s = &self.slots[slot];
        if !s.active {
            return Ok(None);
        }
        let hash = self.hash()?;
        let spec = self.cipher_spec()?;
        limits.check_pbkdf2(s.iterations)?;
        limits.check_pbkdf2(self.mk_digest_iter)?;
        let kb = self.key_bytes as usize;
        let mut slot_key = vec![0u8; kb];
        pbkdf2(
            hash,
            passphrase,
            &s.salt,
            s.iterations,
            &mut slot_key,
            limits,
        )?;
        let mut material = vec![0u8; (s.material_sectors(self.key_bytes) * SECTOR) as usize];
        io.read_at(s.key_offset as u64 * SECTOR, &mut material)?;
        SectorCipher::new(spec, &slot_key, SECTOR as usize)?.decrypt(0, &mut material)?;
        let mk = af::merge(hash, &material[..kb * s.stripes as usize], kb, s.stripes)?;
        if self.verify_master_key(&mk, limits)? {
            Ok(Some(mk))
        } else {
            Ok(None)
        }
    }

    /// Find the master key: try every active slot with `passphrase`.
    pub fn unlock(
        &self,
        io: &dyn HeaderIo,
        passphrase: &[u8],
        limits: &WorkLimits,
    ) -> Result<Unlocked> {
        for slot in 0..NUM_SLOTS {
            if let Some(master_key) = self.try_slot(io, slot, passphrase, limits)? {
                return Ok(Unlocked { master_key, slot });
            }
        }
        Err(wrong_passphrase())
    }

    /// Store `master_key` under `passphrase` in `slot` with `iterations` PBKDF2 rounds: key
    /// material first (then flushed), the header last.
    pub fn set_slot(
        &mut self,
        io: &dyn HeaderIo,
        slot: usize,
        master_key: &[u8],
        passphrase: &[u8],
        iterations: u32,
    ) -> Result<()> {
        if slot >= NUM_SLOTS {
            return Err(Error::invalid(format!(
                "Invalid keyslot {slot} is specified, must be between 0 and {}",
                NUM_SLOTS - 1
            )));
        }
        let hash = self.hash()?;
        let spec = self.cipher_spec()?;
        let kb = self.key_bytes as usize;
        if master_key.len() != kb {
            return Err(Error::invalid(
                "Master key length does not match the header",
            ));
        }
        let mut salt = [0u8; 32];
        crate::random::fill(&mut salt)?;
        let mut slot_key = vec![0u8; kb];
        let limits = WorkLimits::unlimited();
        pbkdf2(hash, passphrase, &salt, iterations, &mut slot_key, &limits)?;
        let s = &self.slots[slot];
        let mut material = vec![0u8; (s.material_sectors(self.key_bytes) * SECTOR) as usize];
        af::split(
            hash,
            master_key,
            s.stripes,
            &mut material[..kb * s.stripes as usize],
        )?;
        SectorCipher::new(spec, &slot_key, SECTOR as usize)?.encrypt(0, &mut material)?;
        io.write_at(s.key_offset as u64 * SECTOR, &material)?;
        io.flush()?;
        self.slots[slot] = KeySlot {
            active: true,
            iterations,
            salt,
            ..s.clone()
        };
        io.write_at(0, &self.to_bytes()?)?;
        io.flush()
    }

    /// Disable `slot` and overwrite its key material with random bytes (header first, so a
    /// crash never leaves an active slot with destroyed material).
    pub fn erase_slot(&mut self, io: &dyn HeaderIo, slot: usize) -> Result<()> {
        if slot >= NUM_SLOTS {
            return Err(Error::invalid(format!(
                "Invalid keyslot {slot} is specified, must be between 0 and {}",
                NUM_SLOTS - 1
            )));
        }
        let s = self.slots[slot].clone();
        self.slots[slot] = KeySlot {
            active: false,
            iterations: 0,
            salt: [0; 32],
            ..s.clone()
        };
        io.write_at(0, &self.to_bytes()?)?;
        io.flush()?;
        let mut junk = vec![0u8; (s.material_sectors(self.key_bytes) * SECTOR) as usize];
        crate::random::fill(&mut junk)?;
        io.write_at(s.key_offset as u64 * SECTOR, &junk)?;
        io.flush()
    }

    /// Number of active slots.
    pub fn active_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.active).count()
    }
}
