//! The qcow2 snapshot table: parsing with QEMU's limits, and encoding.
//!
//! On-disk layout (big-endian; QEMU docs/interop/qcow2.txt, "Snapshots"). The table starts at
//! the header's `snapshots_offset` (cluster aligned) and holds `nb_snapshots` entries, each
//! starting on an 8-byte boundary:
//! ```text
//!  0 -  7  l1_table_offset     snapshot's L1 table (cluster aligned)
//!  8 - 11  l1_size             entries in that L1 table
//! 12 - 13  id_str_size         bytes of the unique ID string
//! 14 - 15  name_size           bytes of the name
//! 16 - 19  date_sec            creation time (seconds since the epoch)
//! 20 - 23  date_nsec           creation time (nanoseconds)
//! 24 - 31  vm_clock_nsec       guest clock
//! 32 - 35  vm_state_size       VM state bytes (0 when it does not fit: see the extra data)
//! 36 - 39  extra_data_size     bytes of extra data that follow
//! 40 -     extra data:         0 -  7 vm_state_size_large  (if extra_data_size >= 8)
//!                              8 - 15 disk_size            (>= 16; required for version 3)
//!                             16 - 23 icount, -1 = unknown (>= 24)
//!                             further bytes: unknown, kept as they are
//!          id string (no terminator), then name, then padding to 8 bytes
//! ```
//! Limits (QEMU's): at most 65536 entries, a table of at most 64 MiB, at most 1024 bytes of
//! extra data per entry, snapshot L1 tables of at most 32 MiB, cluster aligned, inside the file.
use super::header::{Header, MAX_L1_BYTES, MAX_OFFSET};
use crate::bytes::{be16, be32, be64};
use qimg_core::{Error, Result, SnapshotInfo, Storage};

/// Largest snapshot table QEMU accepts (QCOW_MAX_SNAPSHOTS_SIZE).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Most extra data per entry QEMU accepts (QCOW_MAX_SNAPSHOT_EXTRA_DATA).
pub const MAX_EXTRA_DATA: u32 = 1024;
/// Fixed part of an entry.
const ENTRY_HEADER: usize = 40;
/// Extra data this implementation writes (vm_state_size_large, disk_size, icount).
const KNOWN_EXTRA: usize = 24;

/// One snapshot table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Host offset of the snapshot's L1 table.
    pub l1_offset: u64,
    /// Entries in the snapshot's L1 table.
    pub l1_size: u32,
    /// What qemu-img lists (id, name, dates, sizes).
    pub info: SnapshotInfo,
    /// Extra data beyond the three known fields, written back unchanged.
    pub unknown_extra: Vec<u8>,
    /// Extra data bytes as stored (check reports v3 entries with fewer than 16).
    pub extra_size: u32,
}

/// Read and bound the snapshot table of `h`. Returns the entries and the table's byte length.
pub fn read_table(
    storage: &dyn Storage,
    h: &Header,
    file_size: u64,
) -> Result<(Vec<Snapshot>, u64)> {
    if h.nb_snapshots == 0 {
        return Ok((Vec::new(), 0));
    }
    let cs = h.cluster_size();
    let base = h.snapshots_offset;
    if base == 0 || !base.is_multiple_of(cs) || base >= file_size {
        return Err(Error::corrupt(format!(
            "Snapshot table offset {base:#x} is invalid"
        )));
    }
    let mut out = Vec::with_capacity((h.nb_snapshots as usize).min(4096));
    let mut len = 0u64;
    for i in 0..h.nb_snapshots {
        len = len.div_ceil(8) * 8;
        let mut fixed = [0u8; ENTRY_HEADER];
        read_in_file(storage, &mut fixed, base + len, file_size)?;
        let extra_size = be32(&fixed, 36);
        if extra_size > MAX_EXTRA_DATA {
            return Err(Error::corrupt(format!(
                "Too much extra metadata in snapshot table entry {i}"
            )));
        }
        let (id_len, name_len) = (be16(&fixed, 12) as usize, be16(&fixed, 14) as usize);
        let var_len = extra_size as usize + id_len + name_len;
        if len + (ENTRY_HEADER + var_len) as u64 > MAX_TABLE_BYTES {
            return Err(Error::corrupt("Snapshot table is too big"));
        }
        let mut var = vec![0u8; var_len];
        read_in_file(
            storage,
            &mut var,
            base + len + ENTRY_HEADER as u64,
            file_size,
        )?;
        len += (ENTRY_HEADER + var_len) as u64;
        let extra = &var[..extra_size as usize];
        let mut info = SnapshotInfo {
            id: String::from_utf8_lossy(&var[extra.len()..extra.len() + id_len]).into_owned(),
            name: String::from_utf8_lossy(&var[extra.len() + id_len..]).into_owned(),
            vm_state_size: be32(&fixed, 32) as u64,
            date_sec: be32(&fixed, 16),
            date_nsec: be32(&fixed, 20),
            vm_clock_nsec: be64(&fixed, 24),
            icount: None,
            disk_size: h.size,
        };
        if extra.len() >= 8 {
            info.vm_state_size = be64(extra, 0);
        }
        if extra.len() >= 16 {
            info.disk_size = be64(extra, 8);
        }
        if extra.len() >= 24 && be64(extra, 16) != u64::MAX {
            info.icount = Some(be64(extra, 16));
        }
        let sn = Snapshot {
            l1_offset: be64(&fixed, 0),
            l1_size: be32(&fixed, 8),
            unknown_extra: extra.get(KNOWN_EXTRA..).unwrap_or(&[]).to_vec(),
            extra_size,
            info,
        };
        validate_l1(&sn, cs, file_size)?;
        out.push(sn);
    }
    Ok((out, len))
}

/// Refuse a snapshot whose L1 table is too large, unaligned or outside the file.
fn validate_l1(sn: &Snapshot, cs: u64, file_size: u64) -> Result<()> {
    let bytes = sn.l1_size as u64 * 8;
    let name = &sn.info.id;
    if bytes > MAX_L1_BYTES {
        return Err(Error::corrupt(format!(
            "Snapshot {name}: L1 table too large ({} entries)",
            sn.l1_size
        )));
    }
    if sn.l1_size > 0
        && (!sn.l1_offset.is_multiple_of(cs)
            || sn.l1_offset == 0
            || sn.l1_offset >= MAX_OFFSET
            || sn.l1_offset + bytes > file_size)
    {
        return Err(Error::corrupt(format!(
            "Snapshot {name}: L1 table offset {:#x} is invalid",
            sn.l1_offset
        )));
    }
    Ok(())
}

fn read_in_file(storage: &dyn Storage, buf: &mut [u8], off: u64, file_size: u64) -> Result<()> {
    if off + buf.len() as u64 > file_size {
        return Err(Error::corrupt(format!(
            "Snapshot table at {off:#x} extends beyond the end of the image file"
        )));
    }
    storage.read_at(buf, off)
}

/// Encode `list` as a snapshot table (QEMU's layout: known extra data always, unknown kept).
pub fn encode_table(list: &[Snapshot]) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    for sn in list {
        b.resize(b.len().div_ceil(8) * 8, 0);
        let i = &sn.info;
        if i.id.len() > u16::MAX as usize || i.name.len() > u16::MAX as usize {
            return Err(Error::invalid(
                "snapshot ID or name is longer than 65535 bytes",
            ));
        }
        b.extend_from_slice(&sn.l1_offset.to_be_bytes());
        b.extend_from_slice(&sn.l1_size.to_be_bytes());
        b.extend_from_slice(&(i.id.len() as u16).to_be_bytes());
        b.extend_from_slice(&(i.name.len() as u16).to_be_bytes());
        b.extend_from_slice(&i.date_sec.to_be_bytes());
        b.extend_from_slice(&i.date_nsec.to_be_bytes());
        b.extend_from_slice(&i.vm_clock_nsec.to_be_bytes());
        let small = u32::try_from(i.vm_state_size).unwrap_or(0);
        b.extend_from_slice(&small.to_be_bytes());
        b.extend_from_slice(&((KNOWN_EXTRA + sn.unknown_extra.len()) as u32).to_be_bytes());
        b.extend_from_slice(&i.vm_state_size.to_be_bytes());
        b.extend_from_slice(&i.disk_size.to_be_bytes());
        b.extend_from_slice(&i.icount.unwrap_or(u64::MAX).to_be_bytes());
        b.extend_from_slice(&sn.unknown_extra);
        b.extend_from_slice(i.id.as_bytes());
        b.extend_from_slice(i.name.as_bytes());
        if b.len() as u64 > MAX_TABLE_BYTES {
            return Err(Error::invalid("Snapshot table is too big"));
        }
    }
    Ok(b)
}

/// Refuse to use a snapshot whose L1 table cannot map its disk size.
/// `l2_entries` is the number of entries per L2 table (halved with extended L2 entries).
pub fn check_covers(sn: &Snapshot, cs: u64, l2_entries: u64) -> Result<()> {
    let per_l1 = cs * l2_entries;
    if sn.info.disk_size > i64::MAX as u64 || sn.info.disk_size.div_ceil(per_l1) > sn.l1_size as u64
    {
        return Err(Error::corrupt(format!(
            "Snapshot {}: L1 table is too small for its disk size {}",
            sn.info.id, sn.info.disk_size
        )));
    }
    Ok(())
}

/// The next ID qemu-img would choose: one more than the largest numeric prefix of any ID.
pub fn next_id(list: &[Snapshot]) -> String {
    let max = list
        .iter()
        .map(|s| {
            let digits: String = s
                .info
                .id
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse::<u64>().unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    (max + 1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_through_the_layout() {
        let sn = Snapshot {
            l1_offset: 0x30000,
            l1_size: 1,
            info: SnapshotInfo {
                id: "7".into(),
                name: "tag".into(),
                date_sec: 5,
                disk_size: 1 << 20,
                icount: Some(0),
                ..Default::default()
            },
            unknown_extra: vec![1, 2, 3],
            extra_size: 27,
        };
        let b = encode_table(&[sn.clone(), sn.clone()]).unwrap();
        // 40 + 27 + 1 + 3 = 71, padded to 72 for the second entry.
        assert_eq!(b.len(), 72 + 71);
        assert_eq!(be32(&b, 36), 27);
        assert_eq!(&b[67..71], b"7tag");
        assert_eq!(next_id(&[sn]), "8");
    }
}
