//! Helpers shared by the format crate's integration tests.
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::Storage;
use std::process::Command;
use std::sync::Arc;

/// Open `path` as a file storage (default locking).
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
