//! QEMU-compatible image locking with OFD locks.
//!
//! Byte `100 + i` locked (shared) = "I hold permission i"; byte `200 + i` locked = "I do not share
//! permission i". Permissions: 0 consistent read, 1 write, 2 write unchanged, 3 resize.
//! (Implementation arrives with the file-protocol work; see `file.rs`.)

/// A permission bit, in QEMU's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Consistent read.
    ConsistentRead = 0,
    /// Write.
    Write = 1,
    /// Write without changing the visible contents.
    WriteUnchanged = 2,
    /// Resize.
    Resize = 3,
}

/// Locking policy, as `file.locking=on|off|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Always lock; fail if OFD locks are unavailable.
    On,
    /// Never lock.
    Off,
    /// Lock where OFD locks are supported.
    Auto,
}
