//! Cache modes of the `file` protocol (QEMU's `-t`/`-T`) and the O_DIRECT I/O they need.
//!
//! QEMU's cache modes map onto three flags: `cache.direct` (O_DIRECT: bypass the page cache),
//! `cache.writeback` (off: every write is durable before it completes — qimg opens with O_DSYNC)
//! and `cache.no-flush` (flushes are dropped):
//!
//! | mode         | direct | writeback | no-flush |
//! |--------------|--------|-----------|----------|
//! | writeback    | off    | on        | off      |
//! | none / off   | on     | on        | off      |
//! | writethrough | off    | off       | off      |
//! | directsync   | on     | off       | off      |
//! | unsafe       | off    | on        | on       |
//!
//! With O_DIRECT, the file offset, the length and the memory address of every transfer must be
//! multiples of the file's direct-I/O alignment. [`DirectIo`] takes any request: aligned ones go
//! straight to the kernel; others go through an aligned bounce buffer (a read-modify-write of the
//! partial blocks at either end, serialized against every other transfer on the file so two
//! writers of one block cannot lose each other's bytes).
use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::RwLock;

/// A cache mode, as QEMU's `bdrv_parse_cache_mode` accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Page cache, flushes honoured (qimg's default).
    #[default]
    Writeback,
    /// O_DIRECT, flushes honoured (`none`, alias `off`).
    None,
    /// Page cache, every write durable on completion (O_DSYNC).
    Writethrough,
    /// O_DIRECT and O_DSYNC.
    Directsync,
    /// Page cache, flushes dropped (a job's final flush is still done: see
    /// [`crate::Storage::flush_durable`]).
    Unsafe,
}

impl CacheMode {
    /// Parse a mode name; unknown names are `InvalidArgument` with QEMU's message.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "writeback" => CacheMode::Writeback,
            "none" | "off" => CacheMode::None,
            "writethrough" => CacheMode::Writethrough,
            "directsync" => CacheMode::Directsync,
            "unsafe" => CacheMode::Unsafe,
            _ => return Err(Error::invalid(format!("Invalid cache option: {s}"))),
        })
    }

    /// Bypass the page cache (O_DIRECT).
    pub fn direct(self) -> bool {
        matches!(self, CacheMode::None | CacheMode::Directsync)
    }

    /// Every write durable on completion (O_DSYNC).
    pub fn write_through(self) -> bool {
        matches!(self, CacheMode::Writethrough | CacheMode::Directsync)
    }

    /// Flushes requested by drivers are dropped.
    pub fn no_flush(self) -> bool {
        self == CacheMode::Unsafe
    }
}

/// Alignment used when the kernel does not say (STATX_DIOALIGN needs Linux 6.1): a page is a
/// multiple of every logical block size in use.
const FALLBACK_ALIGN: usize = 4096;
/// Largest bounce buffer a single transfer uses (bigger requests go in pieces).
const BOUNCE_MAX: usize = 4 << 20;

/// A heap buffer whose start is aligned for O_DIRECT.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeroed bytes starting at a multiple of `align` (a power of two).
    pub fn new(len: usize, align: usize) -> Self {
        let raw = vec![0u8; len + align];
        let start = raw.as_ptr().align_offset(align);
        AlignedBuf { raw, start, len }
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The aligned bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The first `n` bytes of `buf` that start on an `align` boundary (a power of two), growing `buf`
/// as needed: a reusable scratch buffer that O_DIRECT files take without a bounce copy.
pub fn aligned_slice(buf: &mut Vec<u8>, n: usize, align: usize) -> &mut [u8] {
    if buf.len() < n + align {
        buf.resize(n + align, 0);
    }
    let off = buf.as_ptr().align_offset(align);
    &mut buf[off..off + n]
}

/// O_DIRECT transfers on one file, with the alignment it needs.
#[derive(Debug)]
pub struct DirectIo {
    align: usize,
    /// Aligned transfers share it; bounce-buffered ones (read-modify-write) hold it alone.
    rmw: RwLock<()>,
}

impl DirectIo {
    /// Probe the direct-I/O alignment of `file` (offset and memory): STATX_DIOALIGN, else the
    /// logical block size of a block device, else 4096.
    pub fn probe(file: &File) -> Self {
        DirectIo {
            align: probe_align(file),
            rmw: RwLock::new(()),
        }
    }

    /// The alignment in force.
    pub fn align(&self) -> usize {
        self.align
    }

    fn aligned(&self, ptr: *const u8, len: usize, offset: u64) -> bool {
        let a = self.align;
        (ptr as usize).is_multiple_of(a) && len.is_multiple_of(a) && offset.is_multiple_of(a as u64)
    }

    /// Read `buf.len()` bytes at `offset`; bytes past end of file read as zeros.
    pub fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if self.aligned(buf.as_ptr(), buf.len(), offset) {
            let _g = self.rmw.read().unwrap_or_else(|p| p.into_inner());
            return read_full(file, buf, offset);
        }
        let _g = self.rmw.read().unwrap_or_else(|p| p.into_inner());
        let a = self.align as u64;
        let mut done = 0usize;
        let mut bounce: Option<AlignedBuf> = None;
        while done < buf.len() {
            let pos = offset + done as u64;
            let start = pos / a * a;
            let want = (buf.len() - done).min(BOUNCE_MAX - 2 * self.align);
            let end = (pos + want as u64).div_ceil(a) * a;
            let n = (end - start) as usize;
            let cap = BOUNCE_MAX.min(buf.len() + 2 * self.align);
            let b = bounce.get_or_insert_with(|| AlignedBuf::new(cap, self.align));
            read_full(file, &mut b.as_mut_slice()[..n], start)?;
            let skip = (pos - start) as usize;
            buf[done..done + want].copy_from_slice(&b.as_slice()[skip..skip + want]);
            done += want;
        }
        Ok(())
    }

    /// Write all of `buf` at `offset`. Partial blocks are read, patched and written back; a write
    /// that extends the file leaves its size at the end of `buf`, not at the block boundary.
    pub fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.aligned(buf.as_ptr(), buf.len(), offset) {
            let _g = self.rmw.read().unwrap_or_else(|p| p.into_inner());
            return file.write_all_at(buf, offset);
        }
        let a = self.align as u64;
        let whole = offset.is_multiple_of(a) && (buf.len() as u64).is_multiple_of(a);
        let mut bounce = AlignedBuf::new(BOUNCE_MAX.min(buf.len() + 2 * self.align), self.align);
        if whole {
            // Only the memory is misaligned: copy through the bounce buffer, no read needed.
            let _g = self.rmw.read().unwrap_or_else(|p| p.into_inner());
            let mut done = 0usize;
            while done < buf.len() {
                let n = (buf.len() - done).min(bounce.len);
                bounce.as_mut_slice()[..n].copy_from_slice(&buf[done..done + n]);
                file.write_all_at(&bounce.as_slice()[..n], offset + done as u64)?;
                done += n;
            }
            return Ok(());
        }
        let _g = self.rmw.write().unwrap_or_else(|p| p.into_inner());
        let old_len = file.metadata()?.len();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let start = pos / a * a;
            let want = (buf.len() - done).min(bounce.len - 2 * self.align);
            let end = (pos + want as u64).div_ceil(a) * a;
            let n = (end - start) as usize;
            let b = &mut bounce.as_mut_slice()[..n];
            if start != pos || pos + (want as u64) != end {
                // Keep the bytes around the patch: read the first and last blocks.
                read_full(file, &mut b[..self.align], start)?;
                if n > self.align {
                    read_full(file, &mut b[n - self.align..], end - a)?;
                }
            }
            let skip = (pos - start) as usize;
            b[skip..skip + want].copy_from_slice(&buf[done..done + want]);
            file.write_all_at(b, start)?;
            done += want;
        }
        let want_len = old_len.max(offset + buf.len() as u64);
        if file.metadata()?.len() > want_len {
            file.set_len(want_len)?;
        }
        Ok(())
    }
}

/// Read `buf.len()` bytes at `offset`, zeros past end of file.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn probe_align(file: &File) -> usize {
    let fd = file.as_raw_fd();
    // SAFETY: statx writes one `struct statx` through a valid pointer; the path is an empty
    // NUL-terminated string with AT_EMPTY_PATH, so it describes `fd` itself.
    let st = unsafe {
        let mut st: libc::statx = std::mem::zeroed();
        let r = libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut st,
        );
        (r == 0).then_some(st)
    };
    if let Some(st) = st {
        if st.stx_mask & libc::STATX_DIOALIGN != 0 && st.stx_dio_offset_align > 0 {
            let a = st.stx_dio_offset_align.max(st.stx_dio_mem_align) as usize;
            if a.is_power_of_two() {
                return a;
            }
        }
    }
    let mut ss: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through a valid pointer; it fails (ENOTTY) on files.
    if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut ss) } == 0
        && ss > 0
        && (ss as usize).is_power_of_two()
    {
        return ss as usize;
    }
    FALLBACK_ALIGN
}
