//! Helpers shared by the format crate's integration tests.
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::Storage;
use std::process::Command;
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
