//! A format over the NBD protocol: the qcow2 driver on an `NbdStorage` that qemu-nbd serves as
//! raw bytes (the qcow2 file itself). Reads equal qemu-img's decode; writes through the driver
//! leave a file qemu-img checks clean and compares equal to the model.
mod common;
use common::{have_qemu, ok, serial};
use qimg_core::nbd::{Address, NbdStorage};
use qimg_core::BlockDriver;
use qimg_formats::{open_driver, OpenOptions};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn qcow2_driver_over_nbd() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.qcow2");
    let i = img.to_str().unwrap();
    ok("qemu-img", &["create", "-q", "-f", "qcow2", i, "8M"]);
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 7 100k 2M", i]);
    // An NBD export has a fixed size: leave room after the image for the clusters it allocates.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let raw = dir.path().join("q.raw");
    ok(
        "qemu-img",
        &["convert", "-O", "raw", i, raw.to_str().unwrap()],
    );
    let mut model = std::fs::read(&raw).unwrap();
    let sock = dir.path().join("s.sock");
    let s = sock.to_str().unwrap();
    let child = Command::new("qemu-nbd")
        .args(["--persistent", "-k", s, "-f", "raw", "-x", "q", i])
        .spawn()
        .expect("qemu-nbd");
    // Stops the server however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Kill(child);
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    {
        let st =
            NbdStorage::connect(&Address::Unix(s.into()), "q", false, "nbd+unix:///q").unwrap();
        let d: Arc<dyn BlockDriver> = open_driver(
            "qcow2",
            Arc::new(st),
            &OpenOptions {
                read_only: false,
                ..Default::default()
            },
        )
        .unwrap();
        let mut got = vec![0u8; 8 << 20];
        d.read(0, &mut got).unwrap();
        assert!(got == model, "qcow2 over NBD reads what qemu-img decodes");
        d.write(5 << 20, &vec![9u8; 700_000]).unwrap();
        model[5 << 20..(5 << 20) + 700_000].fill(9);
        d.write_zeroes(100 << 10, 64 << 10, true).unwrap();
        model[100 << 10..164 << 10].fill(0);
        d.close().unwrap();
    }
    drop(server);
    std::fs::write(&raw, &model).unwrap();
    ok("qemu-img", &["check", i]);
    ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            i,
            raw.to_str().unwrap(),
        ],
    );
}
