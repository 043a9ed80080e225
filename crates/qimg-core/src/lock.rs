//! QEMU-compatible image locking with OFD locks.
//!
//! QEMU marks permissions with one-byte shared (read) OFD locks on the image file:
//! byte `100 + i` held = "I hold permission i", byte `200 + i` held = "I do not share permission
//! i", for i = 0 consistent read, 1 write, 2 write unchanged, 3 resize. A conflict is found by
//! testing (F_OFD_GETLK with F_WRLCK) the opposite byte. Seen on qemu-io 10 in `/proc/locks`:
//! read-only opens hold 100, 201, 203; read-write opens hold 100, 101, 103, 201, 203; read-only
//! with `-U` (force-share) holds only 100. qimg takes exactly the same bytes, so each side
//! refuses what the other would.
use crate::error::{Error, ErrorCode, Result};
use std::os::fd::RawFd;

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

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];

/// The permission bits an open holds and the ones it refuses to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermSet {
    /// Bit i set: hold permission i.
    pub held: u8,
    /// Bit i set: do not share permission i.
    pub unshared: u8,
}

impl PermSet {
    /// What QEMU takes for an image's file: read-only (`-r`), read-write, or read-only with
    /// force-share (`-U`).
    pub fn for_open(read_only: bool, force_share: bool) -> PermSet {
        let bit = |p: Perm| 1u8 << (p as u8);
        let held = if read_only {
            bit(Perm::ConsistentRead)
        } else {
            bit(Perm::ConsistentRead) | bit(Perm::Write) | bit(Perm::Resize)
        };
        let unshared = if force_share {
            0
        } else {
            bit(Perm::Write) | bit(Perm::Resize)
        };
        PermSet { held, unshared }
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
    // SAFETY: fd is an open descriptor owned by the caller; fl is a valid flock for the call.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// True if another open file description holds a lock on byte `start`.
fn held_by_other(fd: RawFd, start: i64) -> std::io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK as libc::c_short, start);
    // SAFETY: fd is an open descriptor owned by the caller; fl is a valid, writable flock.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn locked_error(msg: String, path: &str) -> Error {
    Error::new(
        ErrorCode::Locked,
        format!("{msg}\nIs another process using the image [{path}]?"),
    )
    .with_path(path)
}

/// Take the lock bytes for `perms` on `fd` and check for conflicts with other users of the file.
/// With `LockMode::Auto`, a file system without OFD locks is accepted silently.
pub fn apply(fd: RawFd, perms: PermSet, mode: LockMode, path: &str) -> Result<()> {
    if mode == LockMode::Off {
        return Ok(());
    }
    let unsupported = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOLCK)
        )
    };
    for i in 0..4 {
        let start = [(perms.held, PERM_BASE), (perms.unshared, SHARED_BASE)];
        for (bits, base) in start {
            if bits & (1 << i) != 0 {
                if let Err(e) = set_lock(fd, libc::F_RDLCK as libc::c_short, base + i) {
                    if mode == LockMode::Auto && unsupported(&e) {
                        return Ok(());
                    }
                    return Err(
                        Error::io(format!("Failed to lock byte {}", base + i), &e).with_path(path)
                    );
                }
            }
        }
    }
    for i in 0..4 {
        let bit = 1u8 << i;
        let probe = |start: i64| {
            held_by_other(fd, start)
                .map_err(|e| Error::io("Failed to check lock", &e).with_path(path))
        };
        if perms.held & bit != 0 && probe(SHARED_BASE + i)? {
            return Err(locked_error(
                format!("Failed to get \"{}\" lock", NAMES[i as usize]),
                path,
            ));
        }
        if perms.unshared & bit != 0 && probe(PERM_BASE + i)? {
            return Err(locked_error(
                format!("Failed to get shared \"{}\" lock", NAMES[i as usize]),
                path,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn perm_sets_match_qemu() {
        assert_eq!(
            PermSet::for_open(true, false),
            PermSet {
                held: 0b0001,
                unshared: 0b1010
            }
        );
        assert_eq!(
            PermSet::for_open(false, false),
            PermSet {
                held: 0b1011,
                unshared: 0b1010
            }
        );
        assert_eq!(
            PermSet::for_open(true, true),
            PermSet {
                held: 0b0001,
                unshared: 0
            }
        );
    }

    #[test]
    fn two_writers_conflict_readers_with_force_share_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let ps = p.to_str().unwrap();
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        apply(
            a.as_raw_fd(),
            PermSet::for_open(false, false),
            LockMode::On,
            ps,
        )
        .unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let e = apply(
            b.as_raw_fd(),
            PermSet::for_open(false, false),
            LockMode::On,
            ps,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert!(
            e.message.starts_with("Failed to get \"write\" lock"),
            "{}",
            e.message
        );
        let c = std::fs::File::open(&p).unwrap();
        let e = apply(
            c.as_raw_fd(),
            PermSet::for_open(true, false),
            LockMode::On,
            ps,
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("Failed to get shared \"write\" lock"),
            "{}",
            e.message
        );
        let d = std::fs::File::open(&p).unwrap();
        apply(
            d.as_raw_fd(),
            PermSet::for_open(true, true),
            LockMode::On,
            ps,
        )
        .unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        apply(
            f.as_raw_fd(),
            PermSet::for_open(false, false),
            LockMode::Off,
            ps,
        )
        .unwrap();
    }
}
