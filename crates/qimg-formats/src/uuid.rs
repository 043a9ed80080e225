//! Random (version 4) UUIDs for the image identifiers VDI and VHD headers carry.
use std::io::Read;

/// 16 random bytes laid out as an RFC 4122 version 4 UUID (from the OS random source; falls back
/// to a clock-and-address mix when `/dev/urandom` is unreadable, good enough for an image ID).
pub fn random_v4() -> [u8; 16] {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mix = t ^ ((&b as *const _ as usize as u128) << 64);
        b = mix.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}
