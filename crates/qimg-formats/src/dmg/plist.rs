//! Finding the blkx tables: the XML plist (`resource-fork` → `blkx` → array of dicts, each with
//! a base64 `<data>` mish table) or, for images without one, the binary resource fork.
//!
//! The XML is scanned, not fully parsed: qimg needs only the `<data>` elements of the `blkx`
//! array, and a bounded scan cannot be made to recurse or expand entities.
use crate::bytes::be32;
use qimg_core::{Error, Result};

/// The base64 `<data>` payloads of the `blkx` array in `xml`, decoded.
pub fn blkx_from_xml(xml: &[u8]) -> Result<Vec<Vec<u8>>> {
    let text = std::str::from_utf8(xml).map_err(|_| Error::corrupt("dmg: plist is not UTF-8"))?;
    let key = text
        .find("<key>blkx</key>")
        .ok_or_else(|| Error::corrupt("dmg: plist has no blkx resources"))?;
    let rest = &text[key..];
    let arr = rest
        .find("<array>")
        .ok_or_else(|| Error::corrupt("dmg: blkx is not an array"))?;
    let end = rest[arr..]
        .find("</array>")
        .ok_or_else(|| Error::corrupt("dmg: blkx array is not closed"))?;
    let mut body = &rest[arr..arr + end];
    let mut out = Vec::new();
    while let Some(a) = body.find("<data>") {
        let b = body[a..]
            .find("</data>")
            .ok_or_else(|| Error::corrupt("dmg: <data> element is not closed"))?;
        out.push(base64(&body[a + 6..a + b])?);
        body = &body[a + b + 7..];
    }
    Ok(out)
}

/// Decode base64, skipping whitespace.
fn base64(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return Err(Error::corrupt("dmg: invalid base64 in the plist")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The resources of a binary resource fork's data section (each a u32 length and its bytes);
/// the caller keeps the mish tables among them.
pub fn blkx_from_rsrc(fork: &[u8]) -> Result<Vec<Vec<u8>>> {
    if fork.len() < 16 {
        return Err(Error::corrupt("dmg: resource fork is too short"));
    }
    let data_off = be32(fork, 0) as usize;
    let data_len = be32(fork, 8) as usize;
    let end = data_off
        .checked_add(data_len)
        .filter(|&e| e <= fork.len())
        .ok_or_else(|| Error::corrupt("dmg: resource data lies outside the resource fork"))?;
    let mut out = Vec::new();
    let mut pos = data_off;
    while pos + 4 <= end {
        let n = be32(fork, pos) as usize;
        pos += 4;
        let stop = pos
            .checked_add(n)
            .filter(|&e| e <= end)
            .ok_or_else(|| Error::corrupt("dmg: resource lies outside the resource data"))?;
        if fork[pos..stop].starts_with(b"mish") {
            out.push(fork[pos..stop].to_vec());
        }
        pos = stop;
    }
    Ok(out)
}
