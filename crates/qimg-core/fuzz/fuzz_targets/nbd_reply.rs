//! Fuzz the NBD reply parser: any byte stream, against a read, a block status and a write in
//! flight, must end in a completed request or a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qimg_core::nbd::reply::{read_message, Pending};
use qimg_core::nbd::wire::{CMD_BLOCK_STATUS, CMD_READ, CMD_WRITE};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let structured = data.first().is_some_and(|b| b & 1 == 1);
    let mut inbox: HashMap<u64, Pending> = HashMap::new();
    inbox.insert(1, Pending::new(CMD_READ, 4096, 65536));
    inbox.insert(2, Pending::new(CMD_BLOCK_STATUS, 0, 1 << 20));
    inbox.insert(3, Pending::new(CMD_WRITE, 0, 512));
    let mut local = HashMap::new();
    let mut r = std::io::Cursor::new(data.get(1..).unwrap_or_default());
    for _ in 0..data.len() / 4 + 2 {
        let mut fetch = |c: u64| inbox.remove(&c);
        match read_message(&mut r, &mut local, &mut fetch, structured) {
            Ok(Some((_, p))) if p.ty == CMD_READ && p.error.is_none() => {
                assert_eq!(p.covered, 65536)
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
