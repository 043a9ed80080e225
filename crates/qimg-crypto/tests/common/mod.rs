//! Helpers shared by the crypto crate's integration tests.
#![allow(dead_code)] // not every test binary uses every helper
use qimg_core::Result;
use qimg_crypto::luks1::HeaderIo;
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;

/// A LUKS area in memory.
pub struct MemIo(pub RefCell<Vec<u8>>);

impl HeaderIo for MemIo {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let v = self.0.borrow();
        let o = offset as usize;
        if o + buf.len() > v.len() {
            return Err(qimg_core::Error::corrupt("read beyond the end"));
        }
        buf.copy_from_slice(&v[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut v = self.0.borrow_mut();
        let o = offset as usize;
        if v.len() < o + buf.len() {
            v.resize(o + buf.len(), 0);
        }
        v[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The shared samples folder, or `None` (printing why the test skips).
pub fn samples() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples/generated");
    if p.join("key.txt").exists() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/samples is absent");
        None
    }
}

/// True if `cmd --version` runs; otherwise prints why the calling test skips.
pub fn have(cmd: &str, package: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {cmd} is not installed (apt-get install {package})");
    }
    ok
}

/// Run a command and return its output.
pub fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().expect(cmd)
}

/// Run a command that must succeed; returns stdout.
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

/// sha256 in hex.
pub fn sha256_hex(b: &[u8]) -> String {
    qimg_crypto::HashAlg::Sha256
        .digest(&[b])
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}
