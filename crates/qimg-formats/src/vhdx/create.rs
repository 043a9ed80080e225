//! Creating a VHDX image as `qemu-img create -f vhdx` does (checked against qemu-img 10.0):
//! file identifier, two headers (random sequence number, then + 1), two identical region tables,
//! the log at 1 MiB (`log_size`, a multiple of 1 MiB), the BAT at the next MiB after the log, the
//! metadata region (1 MiB) after the BAT, payload from 5 MiB past the BAT's end. Option values
//! are normalized as qemu-img does (see [`create`]).
//!
//! BAT contents: `block_state_zero=on` (the default) marks every block ZERO; off leaves dynamic
//! blocks NOT_PRESENT and makes fixed blocks FULLY_PRESENT at their place in the file. Fixed
//! images are sized to hold every block either way (a sparse file).
use super::header::{
    Region, RegionTable, VhdxHeader, FILE_SIGNATURE, HEADER_OFFSETS, REGION_OFFSETS,
};
use super::mapping::{geometry, Bat, FULLY_PRESENT, ZERO};
use super::metadata::{Metadata, MAX_DISK_SIZE};
use super::{Guid, MIB};
use crate::options::CreateOptions;
use qimg_core::{Error, Result, Storage};
use std::sync::Arc;

/// QEMU's automatic block size for a disk of `size` bytes.
pub fn auto_block_size(size: u64) -> u64 {
    if size > 32 << 40 {
        64 * MIB
    } else if size > 100 << 30 {
        32 * MIB
    } else if size > 1 << 30 {
        16 * MIB
    } else {
        8 * MIB
    }
}

/// Write a new VHDX image of `opts.size` bytes into `storage`.
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    if opts.backing_file.is_some() {
        return Err(Error::unsupported(
            "Driver 'vhdx' does not support backing files",
        ));
    }
    let fixed = match opts.subformat.as_deref().unwrap_or("dynamic") {
        "dynamic" => false,
        "fixed" => true,
        other => {
            return Err(Error::invalid(format!(
                "Parameter 'subformat' does not accept value '{other}'"
            )))
        }
    };
    let size = opts.size.next_multiple_of(512);
    if size > MAX_DISK_SIZE {
        return Err(Error::invalid("Image size too large; max of 64TB"));
    }
    // As qemu-img's option path: the log size rounds up to whole MiB (0 is refused), the block
    // size rounds up to whole MiB and is capped at 256 MiB, then must be a power of two.
    let log_size = match opts.log_size {
        None => MIB,
        Some(0) => return Err(Error::invalid("Log size must be a multiple of 1 MB")),
        Some(l) => l.next_multiple_of(MIB),
    };
    if log_size > u32::MAX as u64 + 1 - MIB {
        return Err(Error::invalid("Log size must be smaller than 4 GB"));
    }
    let block_size = match opts.block_size.unwrap_or(0) {
        0 => auto_block_size(size),
        b => b.next_multiple_of(MIB).min(256 * MIB),
    };
    if !block_size.is_power_of_two() {
        return Err(Error::invalid("Block size must be a power of two"));
    }
    let zero_blocks = opts.block_state_zero.unwrap_or(true);
    let md = Metadata {
        block_size: block_size as u32,
        leave_blocks_allocated: fixed,
        has_parent: false,
        disk_size: size,
        page83: Guid::random(),
        logical_sector: 512,
        physical_sector: 512,
        parent: None,
    };
    let (data_blocks, entries) = if size == 0 { (0, 0) } else { geometry(&md) };
    let bat_len = (entries * 8).next_multiple_of(MIB).max(MIB);
    let bat_off = (MIB + log_size).next_multiple_of(MIB);
    let md_off = bat_off + bat_len;
    let data_off = bat_off + bat_len + 5 * MIB;
    if storage.size()? != 0 {
        storage.truncate(0)?;
    }
    // File identifier with the creator string.
    let mut id = FILE_SIGNATURE.to_vec();
    for u in concat!("qimg v", env!("CARGO_PKG_VERSION")).encode_utf16() {
        id.extend_from_slice(&u.to_le_bytes());
    }
    storage.write_at(&id, 0)?;
    let seq = u32::from_le_bytes(crate::uuid::random_v4()[..4].try_into().expect("4")) as u64;
    let mut h = VhdxHeader {
        sequence_number: seq,
        file_write_guid: Guid::random(),
        data_write_guid: Guid::random(),
        log_guid: Guid::default(),
        log_version: 0,
        version: 1,
        log_length: log_size as u32,
        log_offset: MIB,
    };
    storage.write_at(&h.encode(), HEADER_OFFSETS[0])?;
    h.sequence_number += 1;
    storage.write_at(&h.encode(), HEADER_OFFSETS[1])?;
    let rt = RegionTable {
        bat: Region {
            offset: bat_off,
            length: bat_len as u32,
        },
        metadata: Region {
            offset: md_off,
            length: MIB as u32,
        },
    };
    let rtb = rt.encode();
    storage.write_at(&rtb, REGION_OFFSETS[0])?;
    storage.write_at(&rtb, REGION_OFFSETS[1])?;
    storage.truncate(if fixed { data_off + size } else { data_off })?;
    if fixed || zero_blocks {
        let mut bat = Bat {
            entries: vec![0; entries as usize],
            block_size,
            chunk_ratio: md.chunk_ratio(),
            disk_size: size,
            sector: 512,
            has_parent: false,
        };
        for b in 0..data_blocks {
            if zero_blocks {
                bat.set(b, 0, ZERO);
            } else {
                bat.set(
                    b,
                    (data_off + b * block_size).next_multiple_of(MIB),
                    FULLY_PRESENT,
                );
            }
        }
        let bytes: Vec<u8> = bat.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        storage.write_at(&bytes, bat_off)?;
    }
    storage.write_at(&md.encode(), md_off)?;
    Ok(())
}
