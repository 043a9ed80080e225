//! The `file` protocol: a POSIX regular file (or block device) as a [`Storage`].
//!
//! Opening takes QEMU-compatible image locks ([`crate::lock`]): by default the permission set
//! [`PermSet::for_open`] picks from `read_only` and `force_share`; [`FileStorage::open_with_perms`]
//! takes another set (e.g. [`PermSet::INFO`] for an open that reads no data) and
//! [`FileStorage::set_perms`] changes it later, as QEMU does when a node's users change.
use crate::direct::{CacheMode, DirectIo};
use crate::error::{Error, Result};
use crate::lock::{LockState, PermSet};
use crate::storage::{DataRun, Storage};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// Options for opening a file.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Open without write access.
    pub read_only: bool,
    /// Create the file if it does not exist, and empty it (after the locks are taken, so an
    /// image in use elsewhere is refused before it is touched).
    pub create: bool,
    /// Locking policy.
    pub locking: crate::lock::LockMode,
    /// Share all permissions with other users (`-U` / force-share; read-only opens only).
    pub force_share: bool,
    /// Cache mode (`-t`/`-T`, `cache.direct`/`cache.no-flush`): see [`crate::direct`].
    pub cache: CacheMode,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            read_only: true,
            create: false,
            locking: crate::lock::LockMode::Auto,
            force_share: false,
            cache: CacheMode::Writeback,
        }
    }
}

/// An open host file. Its image locks live as long as it does (closing the descriptor releases
/// them).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    name: String,
    read_only: bool,
    lock: Mutex<LockState>,
    /// O_DIRECT alignment handling (`cache=none`/`directsync`).
    direct: Option<DirectIo>,
    cache: CacheMode,
}

impl FileStorage {
    /// Open `path` with `opts`, locking with qimg's default permission set for the open
    /// ([`PermSet::for_open`]: bytes 100, 201, 203 read-only; 100, 101, 103, 201, 203
    /// read-write; 100 read-only with force-share).
    ///
    /// Errors: `force_share` on a read-write open is `InvalidArgument` ("force-share=on can only
    /// be used with read-only images"); a conflicting lock is `Locked` with QEMU's message.
    pub fn open(path: &str, opts: &FileOptions) -> Result<Self> {
        let perms = PermSet::for_open(opts.read_only, opts.force_share);
        Self::open_with_perms(path, opts, perms)
    }

    /// Open `path` with `opts`, locking the permission set `perms` instead of the default
    /// (`opts.force_share` is still checked against `opts.read_only`, and otherwise ignored).
    pub fn open_with_perms(path: &str, opts: &FileOptions, perms: PermSet) -> Result<Self> {
        if opts.force_share && !opts.read_only {
            return Err(
                Error::invalid("force-share=on can only be used with read-only images")
                    .with_path(path),
            );
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = 0;
        if opts.cache.direct() {
            flags |= libc::O_DIRECT;
        }
        if opts.cache.write_through() && !opts.read_only {
            flags |= libc::O_DSYNC;
        }
        let file = OpenOptions::new()
            .custom_flags(flags)
            .read(true)
            .write(!opts.read_only)
            .create(opts.create && !opts.read_only)
            // Truncated below, once the locks say nobody else uses the file (as QEMU's create).
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("Could not open '{path}'"), &e).with_path(path))?;
        let lock = crate::lock::apply(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            perms,
            opts.locking,
            path,
        )?;
        if opts.create && !opts.read_only {
            file.set_len(0).map_err(|e| {
                Error::io(format!("Could not resize file '{path}'"), &e).with_path(path)
            })?;
        }
        Ok(FileStorage {
            name: path.to_string(),
            read_only: opts.read_only,
            lock: Mutex::new(lock),
            direct: opts.cache.direct().then(|| DirectIo::probe(&file)),
            cache: opts.cache,
            file,
        })
    }

    /// The permission set in force (what the locks say, or would say with locking off).
    pub fn perms(&self) -> PermSet {
        self.lock_state().perms()
    }

    /// The lock bytes this open holds right now (none with `locking=off`, or with `auto` on a
    /// file system without OFD locks).
    pub fn locked(&self) -> PermSet {
        self.lock_state().locked()
    }

    /// Change the permission set, QEMU's way: take the new bytes, check for conflicts, release the
    /// bytes no longer needed; on a conflict (`Locked`) the old set stays in force. Holding write
    /// or resize on a read-only open is refused (`InvalidArgument`).
    pub fn set_perms(&self, perms: PermSet) -> Result<()> {
        use crate::lock::Perm;
        let writes = Perm::Write.bit() | Perm::WriteUnchanged.bit() | Perm::Resize.bit();
        if self.read_only && perms.held & writes != 0 {
            return Err(Error::invalid(format!(
                "'{}' is opened read-only: cannot take write permissions",
                self.name
            ))
            .with_path(&self.name));
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let mut st = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        st.set(fd, perms, &self.name)
    }

    fn lock_state(&self) -> LockState {
        *self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set FS_NOCOW_FL (`nocow=on`, for btrfs); harmless where the file system has no such flag.
    /// Only effective on an empty file, so call it right after creating the file.
    pub fn set_nocow(&self) {
        const FS_NOCOW_FL: libc::c_int = 0x0080_0000;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // The kernel reads and writes an int through FS_IOC_GETFLAGS/SETFLAGS, whatever the
        // ioctl number's declared type says.
        let mut flags: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read/write one int through a valid pointer on an open
        // fd; errors (ENOTTY, EOPNOTSUPP on file systems without the flag) are ignored.
        unsafe {
            if libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) == 0 && flags & FS_NOCOW_FL == 0 {
                flags |= FS_NOCOW_FL;
                libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags);
            }
        }
    }

    /// The cache mode the file was opened with.
    pub fn cache(&self) -> CacheMode {
        self.cache
    }

    /// The O_DIRECT alignment, when the file is open with O_DIRECT.
    pub fn direct_align(&self) -> Option<usize> {
        self.direct.as_ref().map(DirectIo::align)
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn ioerr(&self, what: &str, e: std::io::Error, offset: u64) -> Error {
        Error::io(format!("{what} failed on '{}'", self.name), &e)
            .with_path(&self.name)
            .with_offset(offset)
    }

    fn ro_check(&self) -> Result<()> {
        if self.read_only {
            Err(Error::new(
                crate::ErrorCode::ReadOnly,
                format!("'{}' is opened read-only", self.name),
            )
            .with_path(&self.name))
        } else {
            Ok(())
        }
    }

    /// fdatasync, whatever the cache mode (nothing to do on a read-only open).
    fn sync(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| self.ioerr("fdatasync", e, 0))
    }

    fn fallocate(
        &self,
        mode: nix::fcntl::FallocateFlags,
        offset: u64,
        length: u64,
    ) -> std::result::Result<(), nix::errno::Errno> {
        nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&self.file),
            mode,
            offset as i64,
            length as i64,
        )
    }
}

impl Storage for FileStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if let Some(d) = &self.direct {
            return d
                .read_at(&self.file, buf, offset)
                .map_err(|e| self.ioerr("read", e, offset));
        }
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.ioerr("read", e, offset + done as u64)),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.ro_check()?;
        if let Some(d) = &self.direct {
            return d
                .write_at(&self.file, buf, offset)
                .map_err(|e| self.ioerr("write", e, offset));
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.ioerr("write", e, offset))
    }

    fn size(&self) -> Result<u64> {
        let md = self.file.metadata().map_err(|e| self.ioerr("stat", e, 0))?;
        if md.file_type().is_file() {
            return Ok(md.len());
        }
        // Block devices: seek to the end.
        use std::io::{Seek, SeekFrom};
        let mut f = &self.file;
        f.seek(SeekFrom::End(0))
            .map_err(|e| self.ioerr("seek", e, 0))
    }

    fn truncate(&self, size: u64) -> Result<()> {
        self.ro_check()?;
        self.file
            .set_len(size)
            .map_err(|e| self.ioerr("truncate", e, size))
    }

    fn flush(&self) -> Result<()> {
        if self.cache.no_flush() {
            return Ok(());
        }
        self.sync()
    }

    fn flush_durable(&self) -> Result<()> {
        if self.cache.no_flush() {
            self.sync()
        } else {
            // `flush` did the work already.
            Ok(())
        }
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.write_zeroes(offset, length, true)
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        use nix::fcntl::FallocateFlags as F;
        self.ro_check()?;
        if length == 0 {
            return Ok(());
        }
        let size = self.size()?;
        if offset >= size {
            // Past EOF reads as zeros already; extend only if asked to keep space.
            if !may_unmap {
                return self.allocate(offset, length);
            }
            return Ok(());
        }
        if may_unmap
            && self
                .fallocate(
                    F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
                    offset,
                    length,
                )
                .is_ok()
        {
            if offset + length > size {
                self.truncate(offset + length)?;
            }
            return Ok(());
        }
        if self
            .fallocate(F::FALLOC_FL_ZERO_RANGE, offset, length)
            .is_ok()
        {
            return Ok(());
        }
        // Fallback: write zeros in bounded chunks.
        let chunk = vec![0u8; (1 << 20).min(length as usize)];
        let mut pos = 0u64;
        while pos < length {
            let n = chunk.len().min((length - pos) as usize);
            self.write_at(&chunk[..n], offset + pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    fn allocate(&self, offset: u64, length: u64) -> Result<()> {
        self.ro_check()?;
        if length == 0 {
            return Ok(());
        }
        match self.fallocate(nix::fcntl::FallocateFlags::empty(), offset, length) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                let end = offset + length;
                if self.size()? < end {
                    self.truncate(end)?;
                }
                Ok(())
            }
            Err(e) => Err(self.ioerr(
                "fallocate",
                std::io::Error::from_raw_os_error(e as i32),
                offset,
            )),
        }
    }

    fn allocated_bytes(&self) -> Result<u64> {
        let md = self.file.metadata().map_err(|e| self.ioerr("stat", e, 0))?;
        Ok(md.blocks() * 512)
    }

    fn data_run(&self, offset: u64, length: u64) -> Result<DataRun> {
        use nix::unistd::{lseek, Whence};
        let size = self.size()?;
        if offset >= size {
            return Ok(DataRun {
                data: false,
                length,
            });
        }
        let end = (offset + length).min(size);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        match lseek(fd, offset as i64, Whence::SeekData) {
            Ok(d) if d as u64 > offset => Ok(DataRun {
                data: false,
                length: (d as u64).min(end) - offset,
            }),
            Ok(_) => match lseek(fd, offset as i64, Whence::SeekHole) {
                Ok(h) => Ok(DataRun {
                    data: true,
                    length: (h as u64).min(end).max(offset + 1) - offset,
                }),
                Err(_) => Ok(DataRun {
                    data: true,
                    length: end - offset,
                }),
            },
            Err(nix::errno::Errno::ENXIO) => Ok(DataRun {
                data: false,
                length: end - offset,
            }),
            Err(_) => Ok(DataRun {
                data: true,
                length: end - offset,
            }),
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn start_writeback(&self) {
        // Nothing is dirty in the page cache with O_DIRECT or O_DSYNC.
        if !self.read_only && !self.cache.direct() && !self.cache.write_through() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
            // SAFETY: sync_file_range only reads its integer arguments; fd is open. Errors are
            // ignored: this is a hint, the flush that follows reports real failures.
            unsafe {
                libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }
}
