//! Space in a Parallels image: clusters are appended at the end of the data area (never reused
//! while open), the BAT is written back on flush after the data, and the file is cut at the last
//! used cluster on close.
use super::driver::State;
use super::header::{Header, SECTOR};
use super::mapping::Bat;
use qimg_core::{Error, Result, Storage};

/// Byte offset of the data area.
pub fn data_start(h: &Header) -> u64 {
    u64::from(h.data_off) * SECTOR
}

/// End of the last cluster the BAT uses (the data area's start when none is).
pub fn used_end(h: &Header, bat: &Bat) -> u64 {
    let cs = h.cluster_size();
    let high = bat
        .entries
        .iter()
        .filter(|&&e| e != 0)
        .map(|&e| u64::from(e) * h.off_multiplier() + cs)
        .max()
        .unwrap_or(0);
    high.max(data_start(h))
}

/// Where the next cluster goes: after the last used one, aligned as the format requires
/// (v2: a multiple of the cluster size, since BAT entries count clusters).
pub fn data_end(h: &Header, bat: &Bat) -> u64 {
    used_end(h, bat).next_multiple_of(h.off_multiplier())
}

/// True if writes could corrupt the image: it was not closed cleanly, or a BAT entry points
/// before the data area, past the end of the file, or at a cluster another entry uses.
pub fn needs_repair(h: &Header, bat: &Bat, file_size: u64) -> bool {
    if h.in_use == super::header::IN_USE {
        return true;
    }
    let start = data_start(h);
    let cs = h.cluster_size();
    let mut hosts: Vec<u64> = Vec::new();
    for &e in bat.entries.iter().filter(|&&e| e != 0) {
        let host = u64::from(e) * h.off_multiplier();
        if host < start || host + cs > file_size {
            return true;
        }
        hosts.push(host);
    }
    hosts.sort_unstable();
    hosts.windows(2).any(|w| w[1] < w[0] + cs)
}

/// Allocate a cluster for guest cluster `idx` at the end of the data area and write `src` at
/// `within` into it (the rest of the cluster reads as zeros).
pub(super) fn allocate(
    storage: &dyn Storage,
    st: &mut State,
    idx: u64,
    within: u64,
    src: &[u8],
) -> Result<()> {
    let cs = st.h.cluster_size();
    let host = st.data_end;
    let idx = usize::try_from(idx).map_err(|_| Error::corrupt("parallels: BAT index overflow"))?;
    if idx >= st.bat.entries.len() {
        return Err(Error::corrupt("parallels: write beyond the BAT"));
    }
    if within == 0 && src.len() as u64 == cs {
        storage.write_at(src, host)?;
    } else {
        let mut cluster = vec![0u8; cs as usize];
        cluster[within as usize..within as usize + src.len()].copy_from_slice(src);
        storage.write_at(&cluster, host)?;
    }
    st.bat.set(&st.h, idx, host)?;
    st.data_end = host + cs;
    Ok(())
}

/// Make written data durable, then the BAT entries that point at it.
pub(super) fn flush(storage: &dyn Storage, st: &mut State) -> Result<()> {
    if st.closed {
        return Ok(());
    }
    storage.flush()?;
    if st.bat.is_dirty() {
        st.bat.write_dirty(storage, &st.h)?;
        storage.flush()?;
    }
    Ok(())
}
