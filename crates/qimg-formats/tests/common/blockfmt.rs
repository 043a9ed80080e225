//! Helpers for the vdi and vpc tests: peers, whole-image reads, a seeded generator, the
//! model-based write run, and a storage that loses power at a chosen point.
#![allow(dead_code)] // each test binary uses a different subset
use crate::common::{run, storage};
use qimg_core::BlockDriver;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// Run a peer and require success.
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

/// The guest bytes as qemu-img decodes them (`-f fmt`).
pub fn qemu_raw(path: &str, fmt: &str) -> Vec<u8> {
    let out = format!("{path}.qemu.raw");
    ok("qemu-img", &["convert", "-f", fmt, "-O", "raw", path, &out]);
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

/// `qemu-img info --output=json` as a value.
pub fn qemu_info(path: &str, fmt: &str) -> serde_json::Value {
    serde_json::from_str(&ok("qemu-img", &["info", "--output=json", "-f", fmt, path])).unwrap()
}

/// Create `path` with qimg.
pub fn qimg_create(fmt: &str, path: &str, opts: CreateOptions) {
    let s = storage(path, false, true);
    create_image(fmt, s.clone(), &opts).unwrap();
    s.flush().unwrap();
}

/// Open `path` with qimg.
pub fn qimg_open(fmt: &str, path: &str, read_only: bool) -> Arc<dyn BlockDriver> {
    open_driver(
        fmt,
        storage(path, read_only, false),
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Every guest byte through qimg.
pub fn read_all(d: &dyn BlockDriver) -> Vec<u8> {
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read(0, &mut b).unwrap();
    b
}

/// A small seeded generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random writes, zero writes, discards and reopenings on an image of `fmt` against an in-memory
/// model; returns the model. Reads through qimg are checked after every step.
pub fn model_run(fmt: &str, path: &str, seed: u64, steps: usize) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut d = qimg_open(fmt, path, false);
    let size = d.virtual_size();
    let mut model = read_all(d.as_ref());
    for step in 0..steps {
        let unit = if rng.below(2) == 0 { 512 } else { 1 };
        let off = rng.below(size) / unit * unit;
        let max = (size - off).min(3 << 20);
        let len = (rng.below(max) + 1).min(max);
        let r = &mut model[off as usize..(off + len) as usize];
        match rng.below(10) {
            0 => {
                d.write_zeroes(off, len, true).unwrap();
                r.fill(0);
            }
            1 => {
                d.discard(off, len).unwrap();
                r.fill(0);
            }
            2 => {
                d.close().unwrap();
                drop(d);
                d = qimg_open(fmt, path, false);
            }
            3 => {
                let buf = vec![0u8; len as usize];
                d.write(off, &buf).unwrap();
                r.fill(0);
            }
            _ => {
                let b = (step as u8).wrapping_mul(7).wrapping_add(1);
                let buf: Vec<u8> = (0..len).map(|i| b ^ (i as u8 & 0x0f)).collect();
                d.write(off, &buf).unwrap();
                r.copy_from_slice(&buf);
            }
        }
        let mut back = vec![0u8; len as usize];
        d.read(off, &mut back).unwrap();
        assert!(
            back == model[off as usize..(off + len) as usize],
            "step {step}: read back"
        );
    }
    d.close().unwrap();
    model
}

pub use crate::common::CrashAt;

/// Run `op` on a copy of `orig` with power lost at (k, j); returns the flushes the run made.
pub fn crash_run(
    fmt: &str,
    path: &str,
    orig: &[u8],
    k: usize,
    j: usize,
    op: &dyn Fn(&dyn BlockDriver),
) -> usize {
    std::fs::write(path, orig).unwrap();
    let st = Arc::new(CrashAt::new(storage(path, false, false), k, j));
    let d = open_driver(
        fmt,
        st.clone(),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap();
    op(d.as_ref());
    let _ = d.close();
    drop(d);
    st.flushes.load(SeqCst)
}
