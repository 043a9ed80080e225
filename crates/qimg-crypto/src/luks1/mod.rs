//! LUKS1, as QEMU's `luks` driver and cryptsetup's `--type luks1` write it: the [`header`]
//! (on-disk layout and validation), [`keyslot`] operations (unlock, set, erase) and [`create`].
//!
//! The API is meant for embedding: key material is reached through [`HeaderIo`] with offsets
//! relative to the header, and the payload cipher ([`Luks1Header::payload_cipher`]) encrypts
//! whatever sector numbers the container chooses (a `luks` file uses payload-relative sectors;
//! qcow2 uses host offset / 512).
pub mod create;
pub mod header;
pub mod keyslot;

pub use create::{create, payload_sectors, Luks1Params};
pub use header::{KeySlot, Luks1Header};
pub use keyslot::{wrong_passphrase, HeaderIo, Unlocked};

use crate::cipher::SectorCipher;
use qimg_core::Result;

impl Luks1Header {
    /// The payload cipher for `master_key` (512-byte sectors).
    pub fn payload_cipher(&self, master_key: &[u8]) -> Result<SectorCipher> {
        SectorCipher::new(self.cipher_spec()?, master_key, header::SECTOR as usize)
    }
}
