//! parallels model test: random writes, zero writes, discards, flushes and reopenings against an
//! in-memory model, on a new v2 image and on a copy of QEMU's v1 sample (BAT in sectors); after
//! each run the image reads as the model, passes `qemu-img check` and `qemu-img compare`.
mod common;
mod rofmt;
use common::{have_qemu, ok, serial, storage};
use qimg_core::BlockDriver;
use qimg_formats::{create_image, open_driver, CreateOptions, OpenOptions};
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open_rw(path: &str) -> Arc<dyn BlockDriver> {
    open_driver(
        "parallels",
        storage(path, false, false),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )
    .unwrap()
}

fn run_model(path: &str, seed: u64, mut model: Vec<u8>) {
    let size = model.len() as u64;
    let mut rng = Rng(seed);
    let mut d = open_rw(path);
    for step in 0..300u32 {
        let off = rng.below(size);
        let len = (rng.below(200_000) + 1).min(size - off);
        match rng.below(10) {
            0..=5 => {
                let pat = (step % 251) as u8 + 1;
                d.write(off, &vec![pat; len as usize]).unwrap();
                model[off as usize..(off + len) as usize].fill(pat);
            }
            6 => {
                d.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            7 => {
                d.discard(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            8 => d.flush().unwrap(),
            _ => {
                d.close().unwrap();
                drop(d);
                d = open_rw(path);
            }
        }
        if step % 50 == 0 {
            let mut b = vec![0u8; len as usize];
            d.read(off, &mut b).unwrap();
            assert_eq!(b, model[off as usize..(off + len) as usize], "step {step}");
        }
    }
    assert_eq!(rofmt::read_all(&*d), model);
    d.close().unwrap();
    drop(d);
    ok("qemu-img", &["check", path]);
    let raw = format!("{path}.raw");
    std::fs::write(&raw, &model).unwrap();
    ok(
        "qemu-img",
        &["compare", "-f", "parallels", "-F", "raw", path, &raw],
    );
}

#[test]
fn random_operations_on_a_new_v2_image() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (seed, cs) in [(1u64, 65536u64), (2, 4096), (3, 1 << 20)] {
        let p = dir.path().join(format!("m{seed}.prl"));
        let p = p.to_str().unwrap();
        create_image(
            "parallels",
            storage(p, false, true),
            &CreateOptions {
                size: (5 << 20) + 512,
                cluster_size: Some(cs),
                ..Default::default()
            },
        )
        .unwrap();
        run_model(p, seed * 7919, vec![0u8; (5 << 20) + 512]);
    }
}

#[test]
fn random_operations_on_qemus_v1_sample() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let Some(src) = rofmt::sample("qemu-iotests/parallels-v1") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v1.prl");
    std::fs::copy(&src, &p).unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)] // a test copy of a read-only sample
    perm.set_readonly(false);
    std::fs::set_permissions(&p, perm).unwrap();
    let p = p.to_str().unwrap();
    let model = rofmt::read_all(&*rofmt::open_ro("parallels", p).unwrap());
    run_model(p, 42, model);
    assert_eq!(&std::fs::read(p).unwrap()[..16], b"WithoutFreeSpace");
}
