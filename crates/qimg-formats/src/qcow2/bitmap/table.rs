//! Bitmap tables: loading (bounded, validated) and turning a table into the bitmap's bits.
//!
//! On-disk layout (QEMU docs/interop/qcow2.txt, "Bitmap table"): `bitmap_table_size` big-endian
//! u64 entries, entry `i` describing bytes `[i*cluster_size, (i+1)*cluster_size)` of the bitmap
//! data (bit `j` of the data covers guest bytes `[j*granularity, (j+1)*granularity)`, least
//! significant bit of each byte first):
//! ```text
//!   bit  0      all-ones flag: with offset 0, every bit of this cluster is set
//!   bits 1-8    reserved (0)
//!   bits 9-55   host offset of a data cluster (cluster aligned); 0 = not allocated (all zeros
//!               unless the all-ones flag is set)
//!   bits 56-63  reserved (0)
//! ```
use qimg_core::{BitmapData, Error, Result, Storage};

/// Host offset bits of a table entry.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// The all-ones flag.
pub const ALL_ONES: u64 = 1;
/// Reserved bits of a table entry.
pub const RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
/// Most bytes of bitmap data qimg keeps in memory for one bitmap.
pub const MAX_LOADED_BYTES: u64 = 64 << 20;
/// Most bytes of bitmap data qimg keeps in memory for all bitmaps of one image.
pub const MAX_TOTAL_LOADED_BYTES: u64 = 256 << 20;

/// Read `entries` table entries at `offset` and validate each (`file_size` bounds offsets).
pub fn load_table(
    storage: &dyn Storage,
    offset: u64,
    entries: u32,
    cs: u64,
    file_size: u64,
) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; entries as usize * 8];
    storage.read_at(&mut raw, offset)?;
    let table: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    for &e in &table {
        let off = e & OFFSET_MASK;
        let bad = e & RESERVED_MASK != 0
            || (off != 0 && (e & ALL_ONES != 0 || !off.is_multiple_of(cs)))
            || off.saturating_add(cs) > file_size.div_ceil(cs) * cs;
        if bad {
            return Err(Error::corrupt(format!(
                "Bitmap table at {offset:#x} has an invalid entry {e:#x}"
            ))
            .with_offset(offset));
        }
    }
    Ok(table)
}

/// Host data clusters a table references.
pub fn data_clusters(table: &[u64]) -> impl Iterator<Item = u64> + '_ {
    table.iter().map(|e| e & OFFSET_MASK).filter(|&o| o != 0)
}

/// The bits a table describes, for a bitmap of `granularity` over `size` guest bytes.
pub fn load_data(
    storage: &dyn Storage,
    table: &[u64],
    granularity: u64,
    size: u64,
    cs: u64,
) -> Result<BitmapData> {
    let mut d = BitmapData::new(granularity, size);
    if d.bits.len() as u64 > MAX_LOADED_BYTES {
        return Err(Error::unsupported(format!(
            "Bitmaps of more than {MAX_LOADED_BYTES} bytes are not supported"
        )));
    }
    for (i, chunk) in d.bits.chunks_mut(cs as usize).enumerate() {
        let e = table.get(i).copied().unwrap_or(0);
        let off = e & OFFSET_MASK;
        if off != 0 {
            storage.read_at(chunk, off)?;
        } else if e & ALL_ONES != 0 {
            chunk.fill(0xff);
        }
    }
    // Bits past the guest size are meaningless: keep them clear.
    let nbits = size.div_ceil(granularity);
    if !nbits.is_multiple_of(8) {
        if let Some(last) = d.bits.last_mut() {
            *last &= (1u8 << (nbits % 8)) - 1;
        }
    }
    Ok(d)
}
