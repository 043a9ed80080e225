//! Fuzz the NBD negotiation: any server byte stream ends in an export or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qimg_core::nbd::handshake;
use std::io::{Cursor, Read, Write};

struct Duplex<'a>(Cursor<&'a [u8]>);
impl Read for Duplex<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
impl Write for Duplex<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Duplex(Cursor::new(data));
    if handshake::greet(&mut d).is_ok() {
        if let Ok(e) = handshake::negotiate(&mut d, "x") {
            assert!(e.min_block.is_power_of_two() && e.max_block >= e.min_block);
        }
        let _ = handshake::list(&mut d);
    }
});
