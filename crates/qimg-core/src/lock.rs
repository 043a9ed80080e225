//! QEMU-compatible image locking with OFD locks.
//!
//! QEMU's `file` driver (block/file-posix.c) marks permissions with one-byte shared (`F_RDLCK`)
//! OFD locks on the image file: byte `100 + i` held = "I hold permission i", byte `200 + i` held =
//! "I do not share permission i", for i = 0 consistent read, 1 write, 2 write unchanged,
//! 3 resize. QEMU never takes an exclusive lock: a conflict is found by testing
//! (`F_OFD_GETLK` with `F_WRLCK`) the opposite byte, which only sees other open file
//! descriptions — so two opens in one process conflict like two processes do.
//!
//! A permission change runs as QEMU's `raw_handle_perm_lock`: *prepare* locks the union of the
//! old and the new bytes, then checks every permission the new set holds against the other
//! side's "not shared" bytes (200+i) and then every permission it does not share against the
//! other side's "held" bytes (100+i); on a conflict it *aborts* back to the old bytes, otherwise it
//! *commits* by unlocking the bytes the new set no longer needs.
//!
//! Which bytes QEMU 10.0 holds, read from `/proc/locks` and `strace -e fcntl` (adjacent bytes show
//! merged as one range in `/proc/locks`):
//!
//! | opener                                                      | held (100+i) | unshared (200+i) |
//! |-------------------------------------------------------------|--------------|------------------|
//! | qcow2 read-write (qemu-io, qemu-nbd, qemu-img resize)       | 0, 1, 3      | 1, 3             |
//! | qcow2 read-only (qemu-io -r, qemu-nbd -r, check, map); any convert source | 0 | 1, 3          |
//! | qemu-img info on qcow2 (no I/O)                             | —            | 1, 3             |
//! | read-only with `-U` (force-share)                           | 0            | —                |
//! | raw read-write under qemu-nbd                               | 0, 1         | 3                |
//! | raw read-write under qemu-io                                | 0, 1         | —                |
//! | qemu-img info on raw, or any open with `-U` and no I/O      | —            | —                |
//!
//! (raw passes its user's permissions through, so its bytes depend on the program.) qimg's
//! defaults, [`PermSet::for_open`], are the format-node-over-file sets of the first, second and
//! fourth rows: what QEMU takes for an image it reads or writes through a format driver. They are
//! the strictest sets QEMU uses for data access, so qimg refuses whatever QEMU would refuse and
//! QEMU refuses to write or resize an image qimg has open. Callers that want QEMU's exact
//! per-command set (e.g. `info`, which reads no data) pass [`PermSet::INFO`] or their own set.
use crate::error::{Error, ErrorCode, Result};
use std::os::fd::RawFd;

/// A permission bit, in QEMU's numbering (`BLK_PERM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Consistent read (`BLK_PERM_CONSISTENT_READ`).
    ConsistentRead = 0,
    /// Write (`BLK_PERM_WRITE`).
    Write = 1,
    /// Write without changing the visible contents (`BLK_PERM_WRITE_UNCHANGED`).
    WriteUnchanged = 2,
    /// Resize (`BLK_PERM_RESIZE`).
    Resize = 3,
}

impl Perm {
    /// Every permission, in bit order.
    pub const ALL: [Perm; 4] = [
        Perm::ConsistentRead,
        Perm::Write,
        Perm::WriteUnchanged,
        Perm::Resize,
    ];

    /// The bit of this permission in a [`PermSet`] mask.
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// QEMU's name for the permission, as used in lock error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Perm::ConsistentRead => "consistent read",
            Perm::Write => "write",
            Perm::WriteUnchanged => "write unchanged",
            Perm::Resize => "resize",
        }
    }
}

/// Locking policy, as `file.locking=on|off|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Always lock; fail if OFD locks are unavailable.
    On,
    /// Never lock.
    Off,
    /// Lock where OFD locks are supported (the file system answers `EINVAL`/`EOPNOTSUPP`/
    /// `ENOLCK` otherwise, and the open goes on without locks).
    Auto,
}

impl LockMode {
    /// Parse `on`, `off` or `auto` (QEMU's spelling; an error otherwise, worded as QEMU's).
    pub fn parse(s: &str) -> Result<LockMode> {
        match s {
            "on" => Ok(LockMode::On),
            "off" => Ok(LockMode::Off),
            "auto" => Ok(LockMode::Auto),
            other => Err(Error::invalid(format!("invalid parameter value: {other}"))),
        }
    }
}

/// First byte of the "I hold permission i" range (`RAW_LOCK_PERM_BASE`).
pub const PERM_BASE: i64 = 100;
/// First byte of the "I do not share permission i" range (`RAW_LOCK_SHARED_BASE`).
pub const SHARED_BASE: i64 = 200;
/// Mask of every permission bit qimg (and QEMU ≥ 7.0) locks.
const ALL_BITS: u8 = 0b1111;

/// The permission bits an open holds and the ones it refuses to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermSet {
    /// Bit i set: hold permission i (lock byte 100+i).
    pub held: u8,
    /// Bit i set: do not share permission i (lock byte 200+i).
    pub unshared: u8,
}

impl PermSet {
    /// No permissions held, everything shared: takes no lock bytes at all.
    pub const NONE: PermSet = PermSet {
        held: 0,
        unshared: 0,
    };
    /// A format node reading its file (qcow2 read-only, any `convert` source): holds consistent
    /// read, does not share write or resize. Bytes 100, 201, 203.
    pub const READ_ONLY: PermSet = PermSet {
        held: Perm::ConsistentRead.bit(),
        unshared: Perm::Write.bit() | Perm::Resize.bit(),
    };
    /// A format node writing its file (qcow2 read-write): holds consistent read, write and resize,
    /// shares neither write nor resize. Bytes 100, 101, 103, 201, 203.
    pub const READ_WRITE: PermSet = PermSet {
        held: Perm::ConsistentRead.bit() | Perm::Write.bit() | Perm::Resize.bit(),
        unshared: Perm::Write.bit() | Perm::Resize.bit(),
    };
    /// Read-only with force-share (`-U`): holds consistent read, shares everything. Byte 100.
    pub const FORCE_SHARE: PermSet = PermSet {
        held: Perm::ConsistentRead.bit(),
        unshared: 0,
    };
    /// `qemu-img info` on a format with metadata (no data I/O, so no consistent read): shares
    /// neither write nor resize. Bytes 201, 203. With `-U` QEMU takes [`PermSet::NONE`].
    pub const INFO: PermSet = PermSet {
        held: 0,
        unshared: Perm::Write.bit() | Perm::Resize.bit(),
    };

    /// qimg's default set for an open: [`Self::READ_WRITE`], [`Self::READ_ONLY`], or
    /// [`Self::FORCE_SHARE`] for a read-only open with force-share (the caller rejects
    /// force-share on read-write opens, as QEMU does).
    pub fn for_open(read_only: bool, force_share: bool) -> PermSet {
        match (read_only, force_share) {
            (false, _) => PermSet::READ_WRITE,
            (true, false) => PermSet::READ_ONLY,
            (true, true) => PermSet::FORCE_SHARE,
        }
    }

    /// True if permission `p` is held.
    pub fn holds(self, p: Perm) -> bool {
        self.held & p.bit() != 0
    }

    /// True if permission `p` is shared with other users.
    pub fn shares(self, p: Perm) -> bool {
        self.unshared & p.bit() == 0
    }

    /// The lock bytes this set takes, in the order they are taken.
    pub fn bytes(self) -> Vec<i64> {
        let mut v = Vec::new();
        for p in Perm::ALL {
            if self.holds(p) {
                v.push(PERM_BASE + p as i64);
            }
        }
        for p in Perm::ALL {
            if !self.shares(p) {
                v.push(SHARED_BASE + p as i64);
            }
        }
        v
    }
}

fn flock(kind: libc::c_short, start: i64) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value for every field.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl
}

fn set_lock(fd: RawFd, kind: libc::c_short, start: i64) -> std::io::Result<()> {
    let fl = flock(kind, start);
    loop {
        // SAFETY: fd is an open descriptor owned by the caller; fl is a valid flock for the call.
        let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// True if another open file description holds a lock on byte `start` (QEMU's
/// `qemu_lock_fd_test(fd, start, 1, true)`).
fn held_by_other(fd: RawFd, start: i64) -> std::io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK as libc::c_short, start);
    loop {
        // SAFETY: fd is an open descriptor owned by the caller; fl is a valid, writable flock.
        let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
        if r == 0 {
            return Ok(fl.l_type != libc::F_UNLCK as libc::c_short);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// True for the errors a file system without OFD lock support answers.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOLCK) | Some(libc::ENOSYS)
    )
}

/// The `Locked` error, worded as QEMU's: the failure, then the hint line.
fn locked_error(msg: String, path: &str) -> Error {
    Error::new(
        ErrorCode::Locked,
        format!("{msg}\nIs another process using the image [{path}]?"),
    )
    .with_path(path)
}

/// The lock bytes one open file description holds, and how to change them as QEMU does.
///
/// Owned by the [`crate::file::FileStorage`] that owns the descriptor; the locks themselves go
/// away when the descriptor is closed, so there is nothing to release on drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockState {
    mode: LockMode,
    /// False once `Auto` found the file system without OFD locks (or with `Off`).
    active: bool,
    /// The permission set in force (what the caller asked for last, successfully).
    perms: PermSet,
    /// Bytes currently locked: held bits and unshared bits.
    locked: PermSet,
}

impl LockState {
    /// A state with nothing locked yet (QEMU's `perm = 0, shared = ALL`).
    pub fn new(mode: LockMode) -> LockState {
        LockState {
            mode,
            active: mode != LockMode::Off,
            perms: PermSet::NONE,
            locked: PermSet::NONE,
        }
    }

    /// The permission set in force.
    pub fn perms(&self) -> PermSet {
        self.perms
    }

    /// The bytes this descriptor holds locked right now (empty when locking is off or
    /// unsupported).
    pub fn locked(&self) -> PermSet {
        self.locked
    }

    /// True if locks are taken (mode is not `Off` and the file system supports OFD locks).
    pub fn active(&self) -> bool {
        self.active
    }

    /// Lock `want` bytes not locked yet; with `unlock`, also release locked bytes outside `want`.
    /// QEMU's `raw_apply_lock_bytes`.
    /// An error names the byte that failed.
    fn apply_bytes(
        &mut self,
        fd: RawFd,
        want: PermSet,
        unlock: bool,
    ) -> std::result::Result<(), (i64, std::io::Error)> {
        for (base, want_bits, is_held) in [
            (PERM_BASE, want.held, true),
            (SHARED_BASE, want.unshared, false),
        ] {
            for i in 0..4u8 {
                let bit = 1u8 << i;
                let locked = if is_held {
                    &mut self.locked.held
                } else {
                    &mut self.locked.unshared
                };
                let byte = base + i as i64;
                if want_bits & bit != 0 && *locked & bit == 0 {
                    set_lock(fd, libc::F_RDLCK as libc::c_short, byte).map_err(|e| (byte, e))?;
                    *locked |= bit;
                } else if unlock && *locked & bit != 0 && want_bits & bit == 0 {
                    set_lock(fd, libc::F_UNLCK as libc::c_short, byte).map_err(|e| (byte, e))?;
                    *locked &= !bit;
                }
            }
        }
        Ok(())
    }

    /// Check `new` against the other users of the file (QEMU's `raw_check_lock_bytes`): first
    /// every held permission against the others' "not shared" bytes, then every unshared
    /// permission against the others' "held" bytes.
    fn check(fd: RawFd, new: PermSet, path: &str) -> Result<()> {
        let probe = |start: i64| {
            held_by_other(fd, start).map_err(|e| {
                Error::io(format!("Failed to check lock byte {start}"), &e).with_path(path)
            })
        };
        for p in Perm::ALL {
            if new.holds(p) && probe(SHARED_BASE + p as i64)? {
                return Err(locked_error(
                    format!("Failed to get \"{}\" lock", p.name()),
                    path,
                ));
            }
        }
        for p in Perm::ALL {
            if !new.shares(p) && probe(PERM_BASE + p as i64)? {
                return Err(locked_error(
                    format!("Failed to get shared \"{}\" lock", p.name()),
                    path,
                ));
            }
        }
        Ok(())
    }

    /// Switch to the permission set `new` on `fd` (the file's path `path` is for messages).
    ///
    /// Prepare / check / commit-or-abort as QEMU: lock the union of the old and new bytes, check
    /// `new` against everyone else, then either release the bytes `new` does not need or, on a
    /// conflict, go back to the old bytes and return `ErrorCode::Locked` with QEMU's message.
    /// Dropping only permissions cannot conflict and skips the check. With `LockMode::Auto` a file
    /// system without OFD locks turns locking off for this descriptor, silently.
    pub fn set(&mut self, fd: RawFd, new: PermSet, path: &str) -> Result<()> {
        let new = PermSet {
            held: new.held & ALL_BITS,
            unshared: new.unshared & ALL_BITS,
        };
        if !self.active {
            self.perms = new;
            return Ok(());
        }
        let old = self.perms;
        let only_dropping =
            (old.held | new.held) == old.held && (old.unshared | new.unshared) == old.unshared;
        if !only_dropping {
            let union = PermSet {
                held: old.held | new.held,
                unshared: old.unshared | new.unshared,
            };
            if let Err((byte, e)) = self.apply_bytes(fd, union, false) {
                if self.mode == LockMode::Auto && unsupported(&e) && self.locked == PermSet::NONE {
                    self.active = false;
                    self.perms = new;
                    return Ok(());
                }
                let _ = self.apply_bytes(fd, old, true);
                return Err(Error::io(format!("Failed to lock byte {byte}"), &e).with_path(path));
            }
            if let Err(e) = Self::check(fd, new, path) {
                let _ = self.apply_bytes(fd, old, true);
                return Err(e);
            }
        }
        // Commit: release what `new` does not need. Unlocking cannot conflict; an error here is
        // reported, the new set still stands (QEMU only warns).
        self.perms = new;
        self.apply_bytes(fd, new, true).map_err(|(byte, e)| {
            Error::io(format!("Failed to unlock byte {byte}"), &e).with_path(path)
        })
    }
}

/// Take the lock bytes for `perms` on a freshly opened `fd` and check for conflicts with other
/// users of the file; returns the state to keep for later changes. With `LockMode::Off` nothing
/// is locked; with `LockMode::Auto`, a file system without OFD locks is accepted silently.
pub fn apply(fd: RawFd, perms: PermSet, mode: LockMode, path: &str) -> Result<LockState> {
    let mut st = LockState::new(mode);
    st.set(fd, perms, path)?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn perm_sets_match_qemu() {
        assert_eq!(PermSet::for_open(true, false).bytes(), [100, 201, 203]);
        assert_eq!(
            PermSet::for_open(false, false).bytes(),
            [100, 101, 103, 201, 203]
        );
        assert_eq!(PermSet::for_open(true, true).bytes(), [100]);
        assert_eq!(PermSet::INFO.bytes(), [201, 203]);
        assert!(PermSet::NONE.bytes().is_empty());
    }

    #[test]
    fn lock_mode_parse() {
        assert_eq!(LockMode::parse("auto").unwrap(), LockMode::Auto);
        assert_eq!(LockMode::parse("on").unwrap(), LockMode::On);
        assert_eq!(LockMode::parse("off").unwrap(), LockMode::Off);
        let e = LockMode::parse("foo").unwrap_err();
        assert_eq!(e.message, "invalid parameter value: foo");
    }

    fn open(p: &std::path::Path, rw: bool) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(rw)
            .open(p)
            .unwrap()
    }

    #[test]
    fn two_writers_conflict_readers_with_force_share_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let ps = p.to_str().unwrap();
        let a = open(&p, true);
        apply(a.as_raw_fd(), PermSet::READ_WRITE, LockMode::On, ps).unwrap();
        let b = open(&p, true);
        let e = apply(b.as_raw_fd(), PermSet::READ_WRITE, LockMode::On, ps).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert_eq!(
            e.message,
            format!("Failed to get \"write\" lock\nIs another process using the image [{ps}]?")
        );
        assert_eq!(e.path.as_deref(), Some(ps));
        let c = open(&p, false);
        let e = apply(c.as_raw_fd(), PermSet::READ_ONLY, LockMode::On, ps).unwrap_err();
        assert!(
            e.message.starts_with("Failed to get shared \"write\" lock"),
            "{}",
            e.message
        );
        let d = open(&p, false);
        apply(d.as_raw_fd(), PermSet::FORCE_SHARE, LockMode::On, ps).unwrap();
        let f = open(&p, true);
        let st = apply(f.as_raw_fd(), PermSet::READ_WRITE, LockMode::Off, ps).unwrap();
        assert!(!st.active());
        assert_eq!(st.locked(), PermSet::NONE);
    }

    #[test]
    fn failed_change_rolls_back_and_dropping_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let ps = p.to_str().unwrap();
        // A reader that shares everything, and a second reader.
        let a = open(&p, true);
        let mut sa = apply(a.as_raw_fd(), PermSet::FORCE_SHARE, LockMode::On, ps).unwrap();
        let b = open(&p, false);
        let mut sb = apply(b.as_raw_fd(), PermSet::READ_ONLY, LockMode::On, ps).unwrap();
        // a cannot upgrade to write while b does not share write; its bytes stay as they were.
        let e = sa.set(a.as_raw_fd(), PermSet::READ_WRITE, ps).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert_eq!(sa.locked(), PermSet::FORCE_SHARE);
        assert_eq!(sa.perms(), PermSet::FORCE_SHARE);
        // b drops to force-share: a can now upgrade.
        sb.set(b.as_raw_fd(), PermSet::FORCE_SHARE, ps).unwrap();
        assert_eq!(sb.locked(), PermSet::FORCE_SHARE);
        sa.set(a.as_raw_fd(), PermSet::READ_WRITE, ps).unwrap();
        assert_eq!(sa.locked(), PermSet::READ_WRITE);
        // And b cannot go back to a plain read-only open.
        let e = sb.set(b.as_raw_fd(), PermSet::READ_ONLY, ps).unwrap_err();
        assert!(e.message.starts_with("Failed to get shared \"write\" lock"));
        assert_eq!(sb.locked(), PermSet::FORCE_SHARE);
        // Dropping everything releases every byte.
        sa.set(a.as_raw_fd(), PermSet::NONE, ps).unwrap();
        assert_eq!(sa.locked(), PermSet::NONE);
        sb.set(b.as_raw_fd(), PermSet::READ_ONLY, ps).unwrap();
    }
}
