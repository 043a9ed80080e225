//! Helpers shared by the bochs / cloop / dmg / parallels tests: sample paths, whole-image reads,
//! sha256 through `sha256sum`, and the hostile-input assertion (typed error, bounded time).
#![allow(dead_code)] // each test binary uses a subset
use qimg_core::{BlockDriver, ErrorCode, Storage};
use qimg_formats::{open_driver, OpenOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `../shared/samples/<rel>` from the repository root, or `None` with a printed SKIP reason.
pub fn sample(rel: &str) -> Option<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples");
    let p = root.join(rel);
    if p.exists() {
        Some(p.to_str().unwrap().to_owned())
    } else {
        eprintln!("SKIP: sample {rel} is absent (../shared/samples)");
        None
    }
}

/// True if `cmd` is on PATH; otherwise prints why the calling test skips.
pub fn have(cmd: &str, package: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {cmd} is not installed (apt-get install {package})");
    }
    ok
}

/// Open `path` read-only as `format`.
pub fn open_ro(format: &str, path: &str) -> qimg_core::Result<Arc<dyn BlockDriver>> {
    let s: Arc<dyn Storage> = crate::common::storage(path, true, false);
    open_driver(
        format,
        s,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

/// Every guest byte of `d`, read in 1 MiB pieces.
pub fn read_all(d: &dyn BlockDriver) -> Vec<u8> {
    let size = d.virtual_size();
    let mut out = vec![0u8; size as usize];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        d.read((i as u64) << 20, chunk).expect("read");
    }
    out
}

/// sha256 of `data` in hex, through `sha256sum`.
pub fn sha256(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// Write `bytes` to a fresh file in `dir` and return its path.
pub fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Opening (and, if it opens, reading all of) the hostile image at `path` as `format` must fail
/// with one of `codes` within two seconds, never panic.
pub fn assert_rejected(format: &str, path: &str, codes: &[ErrorCode], what: &str) {
    let t = Instant::now();
    let r = open_ro(format, path).and_then(|d| {
        let size = d.virtual_size().min(64 << 20);
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64) as usize;
            d.read(pos, &mut buf[..n])?;
            pos += n as u64;
        }
        Ok(())
    });
    let e = match r {
        Ok(()) => panic!("{what}: hostile image was accepted"),
        Err(e) => e,
    };
    assert!(
        codes.contains(&e.code),
        "{what}: got {:?} ({}), wanted one of {codes:?}",
        e.code,
        e.message
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{what}: took {:?}",
        t.elapsed()
    );
}
