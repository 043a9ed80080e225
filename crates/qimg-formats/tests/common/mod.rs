//! Helpers shared by the format crate's integration tests.
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::Storage;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// Open `path` as a file storage (default locking).
#[allow(dead_code)] // not every test binary opens files directly
pub fn storage(path: &str, read_only: bool, create: bool) -> Arc<dyn Storage> {
    Arc::new(
        FileStorage::open(
            path,
            &FileOptions {
                read_only,
                create,
                ..Default::default()
            },
        )
        .expect("open"),
    )
}

/// True if qemu-img runs; otherwise prints why the calling test skips.
pub fn have_qemu() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: qemu-img is not installed (apt-get install qemu-utils)");
    }
    ok
}

/// Tests in one file run one at a time: a child spawned by one test shares every open file
/// description of the process until it execs, so it could briefly hold the OFD image locks of a
/// file another test just closed and make that test's next open fail.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold this for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run a peer command and collect its output.
#[allow(dead_code)] // not every test binary spawns peers directly
pub fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().expect(cmd)
}

/// Run a peer command that must succeed; returns its standard output (panics with both
/// streams otherwise).
#[allow(dead_code)] // not every test binary spawns peers directly
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A storage that "loses power": writes before flush `k` reach the file, then the first `j`
/// writes after it, and nothing later (later writes and flushes succeed but are dropped).
#[derive(Debug)]
#[allow(dead_code)] // only the crash tests use it
pub struct CrashAt {
    /// The real file.
    pub inner: Arc<dyn Storage>,
    /// Flushes that complete.
    pub k: usize,
    /// Writes after flush `k` that still land.
    pub j: usize,
    /// Flushes seen.
    pub flushes: AtomicUsize,
    /// Writes seen after flush `k`.
    pub writes: AtomicUsize,
}

impl CrashAt {
    /// Power is lost after flush `k` and `j` more writes.
    #[allow(dead_code)]
    pub fn new(inner: Arc<dyn Storage>, k: usize, j: usize) -> Self {
        Self {
            inner,
            k,
            j,
            flushes: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        }
    }
    fn pass(&self) -> bool {
        let f = self.flushes.load(SeqCst);
        f < self.k || (f == self.k && self.writes.fetch_add(1, SeqCst) < self.j)
    }
}

impl Storage for CrashAt {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> qimg_core::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> qimg_core::Result<()> {
        if self.pass() {
            self.inner.write_at(buf, offset)?;
        }
        Ok(())
    }
    fn size(&self) -> qimg_core::Result<u64> {
        self.inner.size()
    }
    fn truncate(&self, size: u64) -> qimg_core::Result<()> {
        if self.pass() {
            self.inner.truncate(size)?;
        }
        Ok(())
    }
    fn flush(&self) -> qimg_core::Result<()> {
        if self.flushes.fetch_add(1, SeqCst) < self.k {
            self.inner.flush()?;
        }
        Ok(())
    }
    fn discard(&self, offset: u64, length: u64) -> qimg_core::Result<()> {
        if self.pass() {
            self.inner.discard(offset, length)?;
        }
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> qimg_core::Result<()> {
        if self.pass() {
            self.inner.write_zeroes(offset, length, may_unmap)?;
        }
        Ok(())
    }
    fn allocate(&self, offset: u64, length: u64) -> qimg_core::Result<()> {
        if self.pass() {
            self.inner.allocate(offset, length)?;
        }
        Ok(())
    }
    fn allocated_bytes(&self) -> qimg_core::Result<u64> {
        self.inner.allocated_bytes()
    }
    fn data_run(&self, offset: u64, length: u64) -> qimg_core::Result<qimg_core::storage::DataRun> {
        self.inner.data_run(offset, length)
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// Opens `path` read-only as `fmt`, which must fail (`what` names the case); returns the error.
#[allow(dead_code)] // only the hostile-image tests use it
pub fn refused(fmt: &str, path: &str, what: &str) -> qimg_core::Error {
    qimg_formats::open_driver(
        fmt,
        storage(path, true, false),
        &qimg_formats::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .err()
    .unwrap_or_else(|| panic!("{what}: opened"))
}

/// Asserts that `qemu-img info -f fmt` refuses `path` too.
#[allow(dead_code)] // only the hostile-image tests use it
pub fn assert_qemu_refuses(fmt: &str, path: &str, what: &str) {
    let o = run("qemu-img", &["info", "-f", fmt, path]);
    assert!(!o.status.success(), "{what}: qemu-img opened it");
}
