//! VHDX, Microsoft's Hyper-V virtual hard disk format (version 1), as QEMU's `vhdx` driver reads
//! and writes it, plus what QEMU lacks: differencing images are read (through the backing chain
//! the graph builder opens from the parent locator), and a dirty log is replayed in memory on a
//! read-only open instead of refusing it.
//!
//! Roles as in every format folder: [`header`] (file identifier, the two headers, region table),
//! [`metadata`] (the metadata region and its items), [`log`] (log entries: parse, search, replay,
//! write), [`overlay`] (the in-memory replay for read-only opens), [`mapping`] (the BAT with its
//! payload / sector-bitmap interleave, batched lookups), [`alloc`] (block allocation and
//! metadata updates through the log), [`check`], [`create`], and [`driver`].
pub mod alloc;
pub mod check;
pub mod create;
pub mod driver;
pub mod header;
pub mod log;
pub mod mapping;
pub mod metadata;
pub mod overlay;

pub use create::create;
pub use driver::VhdxDriver;

/// 1 MiB, the unit of region offsets, block offsets and the log size.
pub const MIB: u64 = 1 << 20;

/// Probe score as QEMU's `vhdx_probe`: 100 for "vhdxfile" at offset 0, else 0.
pub fn probe(first: &[u8]) -> u32 {
    if first.len() >= 8 && &first[..8] == header::FILE_SIGNATURE {
        100
    } else {
        0
    }
}

/// CRC-32C (Castagnoli) of `buf` with the 4 bytes at `crc_at` taken as zero, as every VHDX
/// checksum is computed.
pub(crate) fn crc_with_hole(buf: &[u8], crc_at: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..crc_at]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &buf[crc_at + 4..])
}

/// Store the checksum of `buf` at `crc_at` (little-endian).
pub(crate) fn set_crc(buf: &mut [u8], crc_at: usize) {
    let c = crc_with_hole(buf, crc_at);
    buf[crc_at..crc_at + 4].copy_from_slice(&c.to_le_bytes());
}

/// True if the checksum stored at `crc_at` matches.
pub(crate) fn crc_ok(buf: &[u8], crc_at: usize) -> bool {
    crate::bytes::le32(buf, crc_at) == crc_with_hole(buf, crc_at)
}

/// A GUID in Microsoft's mixed-endian on-disk layout (first three fields little-endian).
///
/// ```text
/// 0  data1 u32 LE | 4 data2 u16 LE | 6 data3 u16 LE | 8 data4 [u8; 8]
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID in its usual text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`: the first three
    /// groups are stored little-endian, the last two as written. For constants (a malformed
    /// string fails the build).
    pub const fn parse(text: &str) -> Guid {
        let t = text.as_bytes();
        assert!(t.len() == 36, "GUID text must be 36 characters");
        // Byte i of the stored GUID comes from the hex pair starting at POS[i] in the text.
        const POS: [usize; 16] = [6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut g = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            g[i] = (hex_digit(t[POS[i]]) << 4) | hex_digit(t[POS[i] + 1]);
            i += 1;
        }
        Guid(g)
    }

    /// The 16 bytes at `o` of `b`.
    pub fn read(b: &[u8], o: usize) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[o..o + 16]);
        Guid(g)
    }

    /// A new random GUID.
    pub fn random() -> Guid {
        Guid(crate::uuid::random_v4())
    }

    /// True for the all-zero GUID (an empty log, in the header's `log_guid`).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Text form, lower case, as `{8-4-4-4-12}` without braces.
    pub fn to_text(&self) -> String {
        let g = &self.0;
        let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
        let d2 = u16::from_le_bytes([g[4], g[5]]);
        let d3 = u16::from_le_bytes([g[6], g[7]]);
        let tail: String = g[10..].iter().map(|b| format!("{b:02x}")).collect();
        format!("{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{tail}", g[8], g[9])
    }
}

/// The value of one hexadecimal digit (for [`Guid::parse`]).
const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hexadecimal digit"),
    }
}

#[cfg(test)]
mod tests {
    use super::Guid;

    #[test]
    fn guid_text_is_stored_mixed_endian() {
        // The BAT region's GUID as it appears on disk (VHDX spec, region table).
        let on_disk = [
            0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
            0x4a, 0x08,
        ];
        assert_eq!(
            Guid::parse("2DC27766-F623-4200-9D64-115E9BFD4A08").0,
            on_disk
        );
        assert_eq!(
            Guid::parse("2dc27766-f623-4200-9d64-115e9bfd4a08").0,
            on_disk
        );
    }
}
