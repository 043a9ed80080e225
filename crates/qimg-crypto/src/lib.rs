//! qimg's block encryption, in pure Rust.
//!
//! - [`spec`] names ciphers, modes and IV generators as QEMU and LUKS spell them;
//! - [`cipher::SectorCipher`] encrypts whole sectors in place, batched over a buffer;
//! - [`hash`], [`pbkdf2`] (with [`work::WorkLimits`]: capped and cancellable on untrusted
//!   headers) and [`af`] (the LUKS anti-forensic splitter);
//! - [`luks1`]: header, key slots, create — embeddable (qcow2 stores a LUKS header inside);
//! - [`luks2`]: reading cryptsetup's default format (binary header + JSON metadata, PBKDF2 and
//!   Argon2 key slots).
pub mod af;
pub mod cipher;
pub mod hash;
pub mod luks1;
pub mod luks2;
pub mod pbkdf2;
pub mod random;
pub mod spec;
pub mod work;
mod xts_fused;
mod xts_vaes;

pub use cipher::SectorCipher;
pub use hash::HashAlg;
pub use spec::{CipherAlg, CipherFamily, CipherMode, CipherSpec, IvGenAlg};
pub use work::WorkLimits;
