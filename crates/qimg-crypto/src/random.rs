//! Random bytes from the operating system (salts, master keys, AF stripes, UUIDs).
use qimg_core::{Error, ErrorCode, Result};

/// Fill `buf` with random bytes from the OS.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("No random bytes: {e}")))
}

/// A random (version 4) UUID in its 36-character text form.
pub fn uuid_v4() -> Result<String> {
    let mut b = [0u8; 16];
    fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    ))
}
