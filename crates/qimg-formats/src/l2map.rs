//! A two-level cluster map (L1 → L2 → data cluster) with append-only allocation: the engine
//! shared by qed and qcow (v1), whose tables differ only in byte order, entry encoding and
//! table sizes. Each format supplies a [`TableFormat`]; the engine does batched lookups, reads
//! (contiguous host runs become one read), allocating writes, zero clusters and block status.
//!
//! Crash safety: new clusters and new L2 tables are appended past every referenced byte, and
//! metadata is held dirty in memory until [`TableMap::flush`], which writes in the order data →
//! flush → L2 tables → flush → L1 entries → flush. An interrupted write can only leak clusters;
//! no on-disk table ever points at space whose contents were not durable first.
//!
//! Encrypted images (qcow AES) set a [`SectorCipher`]: data clusters are decrypted after reading
//! and encrypted before writing, in whole 512-byte sectors; compressed clusters stay plain.
use crate::legacy_aes::SectorCipher;
use qimg_core::{BlockDriver, Error, ErrorCode, LayerExtent, LayerStatus, Result, Storage};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

/// What one L2 entry says about a guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Not allocated here: the backing layer (or zeros) decides.
    Unallocated,
    /// Reads as zeros (qed's zero cluster).
    Zero,
    /// Plain data at this host offset.
    Data(u64),
    /// A compressed cluster; the raw entry is kept for the format to decode.
    Compressed(u64),
}

/// The format-specific part of a two-level map.
pub trait TableFormat: Send + Sync + 'static {
    /// True for big-endian table entries (qcow), false for little-endian (qed).
    fn big_endian(&self) -> bool;
    /// Decode an L2 entry, checking data offsets against `file_size`.
    fn decode(&self, raw: u64, file_size: u64) -> Result<Entry>;
    /// Check an L1 entry (an L2 table offset) against `file_size`.
    fn check_l2_offset(&self, off: u64, file_size: u64) -> Result<()>;
    /// The raw L2 entry for a zero cluster, if the format has one.
    fn zero_entry(&self) -> Option<u64>;
    /// Inflate a compressed cluster into `out` (one cluster).
    fn inflate(&self, _storage: &dyn Storage, raw: u64, _out: &mut [u8]) -> Result<()> {
        Err(Error::corrupt(format!(
            "unexpected compressed entry {raw:#x}"
        )))
    }
}

/// Sizes of the map.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Entries per L2 table.
    pub l2_entries: u64,
    /// Host bytes reserved for one L2 table (a whole number of clusters).
    pub l2_reserve: u64,
    /// Host offset of the L1 table.
    pub l1_offset: u64,
    /// Entries in the L1 table.
    pub l1_entries: u64,
}

/// Bound on clean L2 tables kept in memory.
const CACHE_BYTES: u64 = 32 << 20;
/// Dirty metadata past this many bytes forces a flush.
const DIRTY_BYTES: u64 = 64 << 20;

/// Mutable map state, under one lock.
struct MapState {
    l1: Vec<u64>,
    l2: HashMap<u64, Arc<Vec<u64>>>,
    /// L2 tables with unwritten changes (written whole at flush).
    dirty_l2: HashSet<u64>,
    /// L1 indices with unwritten changes.
    dirty_l1: HashSet<u64>,
    /// Next free host offset (cluster aligned); also the bound for valid offsets.
    end: u64,
    virtual_size: u64,
    /// Data written since the last storage flush.
    data_unflushed: bool,
    /// Guest cluster ranges held by writes in progress.
    inflight: Vec<(u64, u64)>,
}

/// One run of a planned write.
enum Piece {
    /// `n` clusters from `gc` already stored contiguously at `host`.
    InPlace { gc: u64, n: u64, host: u64 },
    /// `n` clusters from `gc` to store at newly reserved `host`; `head`/`tail` are the previous
    /// entries of the first and last cluster (their uncovered bytes are kept).
    Alloc {
        gc: u64,
        n: u64,
        host: u64,
        head: Entry,
        tail: Entry,
    },
}

/// Guest clusters held by one write; released (and waiters woken) on drop.
struct Claim<'a, F: TableFormat> {
    map: &'a TableMap<F>,
    range: (u64, u64),
}

impl<F: TableFormat> Drop for Claim<'_, F> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.map.state.lock() {
            if let Some(i) = st.inflight.iter().position(|&r| r == self.range) {
                st.inflight.swap_remove(i);
            }
        }
        self.map.idle.notify_all();
    }
}

/// The engine: a format's map over its storage, plus the backing layer.
pub struct TableMap<F: TableFormat> {
    /// The format's entry codec.
    pub fmt: F,
    /// Table sizes.
    pub geo: Geometry,
    storage: Arc<dyn Storage>,
    state: Mutex<MapState>,
    idle: Condvar,
    backing: RwLock<Option<Arc<dyn BlockDriver>>>,
    /// Sector cipher for data clusters (encrypted qcow); compressed clusters are never encrypted.
    cipher: Option<Arc<dyn SectorCipher>>,
}

/// What the caller must do before the first allocation (qed sets its need-check flag).
pub type AllocHook<'a> = &'a mut dyn FnMut() -> Result<()>;

fn lock_err() -> Error {
    Error::new(ErrorCode::Internal, "map lock poisoned")
}

impl<F: TableFormat> TableMap<F> {
    /// Load the L1 table; `end` is the first free host offset (cluster aligned by the caller).
    pub fn load(
        storage: Arc<dyn Storage>,
        fmt: F,
        geo: Geometry,
        end: u64,
        virtual_size: u64,
    ) -> Result<Self> {
        let mut raw = vec![0u8; (geo.l1_entries * 8) as usize];
        storage.read_at(&mut raw, geo.l1_offset)?;
        let l1 = decode_table(&raw, fmt.big_endian());
        Ok(TableMap {
            fmt,
            geo,
            storage,
            state: Mutex::new(MapState {
                l1,
                l2: HashMap::new(),
                dirty_l2: HashSet::new(),
                dirty_l1: HashSet::new(),
                end,
                virtual_size,
                data_unflushed: false,
                inflight: Vec::new(),
            }),
            idle: Condvar::new(),
            backing: RwLock::new(None),
            cipher: None,
        })
    }

    /// Encrypt data clusters with `cipher` from now on (set once, right after [`TableMap::load`]).
    /// Every read and write is then done in whole 512-byte sectors (partial sectors are
    /// read, patched and rewritten).
    pub fn set_cipher(&mut self, cipher: Arc<dyn SectorCipher>) {
        self.cipher = Some(cipher);
    }

    /// True if data clusters are encrypted.
    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// The offset a sector cipher's IVs count from: the guest or the host offset.
    fn iv_offset(c: &dyn SectorCipher, guest: u64, host: u64) -> u64 {
        if c.iv_from_host() {
            host
        } else {
            guest
        }
    }

    /// Decrypt `buf` read from `host` for guest offset `guest` (no-op without a cipher).
    fn decrypt(&self, guest: u64, host: u64, buf: &mut [u8]) -> Result<()> {
        match &self.cipher {
            Some(c) => c.decrypt(Self::iv_offset(c.as_ref(), guest, host), buf),
            None => Ok(()),
        }
    }

    /// Write `data` for guest offset `guest` at `host`, encrypted when a cipher is set.
    fn write_data(&self, guest: u64, host: u64, data: &[u8]) -> Result<()> {
        match &self.cipher {
            Some(c) => {
                let mut enc = data.to_vec();
                c.encrypt(Self::iv_offset(c.as_ref(), guest, host), &mut enc)?;
                self.storage.write_at(&enc, host)
            }
            None => self.storage.write_at(data, host),
        }
    }

    /// The whole-sector range around `[offset, offset+len)`, if it is not already aligned.
    fn unaligned(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let s = crate::legacy_aes::SECTOR;
        if self.cipher.is_none() || (offset.is_multiple_of(s) && len.is_multiple_of(s)) {
            return None;
        }
        let lo = offset / s * s;
        let hi = (offset + len)
            .next_multiple_of(s)
            .min(self.virtual_size().next_multiple_of(s));
        Some((lo, hi))
    }

    fn lock(&self) -> Result<MutexGuard<'_, MapState>> {
        self.state.lock().map_err(|_| lock_err())
    }

    /// The storage under the map.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Guest size.
    pub fn virtual_size(&self) -> u64 {
        self.lock().map(|s| s.virtual_size).unwrap_or(0)
    }

    /// Set the guest size (the tables must already address it).
    pub fn set_virtual_size(&self, size: u64) -> Result<()> {
        self.lock()?.virtual_size = size;
        Ok(())
    }

    /// First free host offset.
    pub fn end(&self) -> u64 {
        self.lock().map(|s| s.end).unwrap_or(0)
    }

    /// A copy of the L1 table (raw entries).
    pub fn l1(&self) -> Result<Vec<u64>> {
        Ok(self.lock()?.l1.clone())
    }

    /// The backing layer.
    pub fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        self.backing.read().ok().and_then(|b| b.clone())
    }

    /// Attach the backing layer.
    pub fn set_backing(&self, b: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        *self.backing.write().map_err(|_| lock_err())? = b;
        Ok(())
    }

    /// Drop cached L2 tables (after a repair rewrote them on disk).
    pub fn reload(&self) -> Result<()> {
        let mut st = self.lock()?;
        let mut raw = vec![0u8; (self.geo.l1_entries * 8) as usize];
        self.storage.read_at(&mut raw, self.geo.l1_offset)?;
        st.l1 = decode_table(&raw, self.fmt.big_endian());
        st.l2.clear();
        st.dirty_l1.clear();
        st.dirty_l2.clear();
        Ok(())
    }

    /// Read one L2 table from disk (raw entries), validating its offset.
    pub fn read_l2(&self, off: u64, end: u64) -> Result<Vec<u64>> {
        self.fmt.check_l2_offset(off, end)?;
        let mut raw = vec![0u8; (self.geo.l2_entries * 8) as usize];
        self.storage.read_at(&mut raw, off)?;
        Ok(decode_table(&raw, self.fmt.big_endian()))
    }

    /// The L2 table at `off`, through the cache.
    fn l2(&self, st: &mut MapState, off: u64) -> Result<Arc<Vec<u64>>> {
        if let Some(t) = st.l2.get(&off) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.read_l2(off, st.end)?);
        let max = (CACHE_BYTES / (self.geo.l2_entries * 8)).max(1) as usize;
        if st.l2.len() >= max + st.dirty_l2.len() {
            let victim = st.l2.keys().find(|k| !st.dirty_l2.contains(k)).copied();
            if let Some(v) = victim {
                st.l2.remove(&v);
            }
        }
        st.l2.insert(off, t.clone());
        Ok(t)
    }

    /// The entry of guest cluster `gc` (lock held).
    fn entry(&self, st: &mut MapState, gc: u64) -> Result<Entry> {
        let (i1, i2) = (gc / self.geo.l2_entries, gc % self.geo.l2_entries);
        let l2off = *st
            .l1
            .get(i1 as usize)
            .ok_or_else(|| Error::new(ErrorCode::OutOfRange, "cluster beyond the L1 table"))?;
        if l2off == 0 {
            return Ok(Entry::Unallocated);
        }
        let t = self.l2(st, l2off)?;
        self.fmt.decode(t[i2 as usize], st.end)
    }

    /// Entries of `n` consecutive guest clusters starting at `gc` (one lock hold).
    pub fn entries(&self, gc: u64, n: u64) -> Result<Vec<Entry>> {
        let mut st = self.lock()?;
        (gc..gc + n).map(|c| self.entry(&mut st, c)).collect()
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let vs = self.virtual_size();
        if offset.checked_add(len).is_none_or(|e| e > vs) {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!("access {offset}+{len} beyond the image size {vs}"),
            ));
        }
        Ok(())
    }

    /// Read from the backing layer, zeros past its end or without one.
    pub fn read_backing(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.backing() {
            None => buf.fill(0),
            Some(b) => {
                let n = b
                    .virtual_size()
                    .saturating_sub(offset)
                    .min(buf.len() as u64) as usize;
                if n > 0 {
                    b.read(offset, &mut buf[..n])?;
                }
                buf[n..].fill(0);
            }
        }
        Ok(())
    }

    /// Read guest bytes; runs of clusters contiguous on the host become one read.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some((lo, hi)) = self.unaligned(offset, buf.len() as u64) {
            let mut whole = vec![0u8; (hi - lo) as usize];
            self.read_sectors(lo, &mut whole)?;
            let at = (offset - lo) as usize;
            buf.copy_from_slice(&whole[at..at + buf.len()]);
            return Ok(());
        }
        self.read_sectors(offset, buf)
    }

    /// [`TableMap::read`] of a range already in whole sectors when encrypted.
    fn read_sectors(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.geo.cluster_size;
        let first = offset / cs;
        let last = (offset + buf.len() as u64 - 1) / cs;
        let entries = self.entries(first, last - first + 1)?;
        let mut pos = 0usize;
        let mut i = 0usize;
        while i < entries.len() {
            let gc = first + i as u64;
            let start = if i == 0 { offset % cs } else { 0 };
            // Extend over clusters that continue this one the same way.
            let mut j = i + 1;
            while j < entries.len() {
                let same = match (entries[i], entries[j]) {
                    (Entry::Data(a), Entry::Data(b)) => b == a + (j - i) as u64 * cs,
                    (Entry::Zero, Entry::Zero) | (Entry::Unallocated, Entry::Unallocated) => true,
                    _ => false,
                };
                if !same {
                    break;
                }
                j += 1;
            }
            let span_end = ((first + j as u64) * cs).min(offset + buf.len() as u64);
            let n = (span_end - (gc * cs + start)) as usize;
            let slot = &mut buf[pos..pos + n];
            match entries[i] {
                Entry::Data(h) => {
                    self.storage.read_at(slot, h + start)?;
                    self.decrypt(gc * cs + start, h + start, slot)?;
                }
                Entry::Zero => slot.fill(0),
                Entry::Unallocated => self.read_backing(gc * cs + start, slot)?,
                Entry::Compressed(raw) => {
                    let mut c = vec![0u8; cs as usize];
                    self.fmt.inflate(self.storage.as_ref(), raw, &mut c)?;
                    slot.copy_from_slice(&c[start as usize..start as usize + n]);
                }
            }
            pos += n;
            i = j;
        }
        Ok(())
    }

    /// The current guest contents of cluster `gc` (for a partial overwrite).
    fn cluster_contents(&self, gc: u64, e: Entry, out: &mut [u8]) -> Result<()> {
        match e {
            Entry::Data(h) => {
                self.storage.read_at(out, h)?;
                self.decrypt(gc * self.geo.cluster_size, h, out)
            }
            Entry::Zero => {
                out.fill(0);
                Ok(())
            }
            Entry::Unallocated => self.read_backing(gc * self.geo.cluster_size, out),
            Entry::Compressed(raw) => self.fmt.inflate(self.storage.as_ref(), raw, out),
        }
    }

    /// Point guest cluster `gc` at `raw` (lock held), allocating its L2 table if needed.
    fn set_entry(&self, st: &mut MapState, gc: u64, raw: u64) -> Result<()> {
        let (i1, i2) = (gc / self.geo.l2_entries, gc % self.geo.l2_entries);
        let mut l2off = st.l1[i1 as usize];
        if l2off == 0 {
            st.end = st.end.next_multiple_of(self.geo.cluster_size);
            l2off = st.end;
            st.end += self.geo.l2_reserve;
            st.l1[i1 as usize] = l2off;
            st.dirty_l1.insert(i1);
            st.l2
                .insert(l2off, Arc::new(vec![0u64; self.geo.l2_entries as usize]));
        }
        drop(self.l2(st, l2off)?);
        // The cache holds the only reference here, so this updates the table in place.
        let t = st
            .l2
            .get_mut(&l2off)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "L2 table left the cache"))?;
        Arc::make_mut(t)[i2 as usize] = raw;
        st.dirty_l2.insert(l2off);
        Ok(())
    }

    /// Wait until no other write holds a guest cluster in `[first, last]`, then hold them.
    fn claim(&self, first: u64, last: u64) -> Result<Claim<'_, F>> {
        let mut st = self.lock()?;
        while st.inflight.iter().any(|&(a, b)| a <= last && first <= b) {
            st = self.idle.wait(st).map_err(|_| lock_err())?;
        }
        st.inflight.push((first, last));
        Ok(Claim {
            map: self,
            range: (first, last),
        })
    }

    /// Write guest bytes. Clusters holding plain data are overwritten in place; others get a new
    /// cluster (appended) whose uncovered bytes keep their previous guest contents. `hook` runs
    /// once before the first allocation. The guest clusters are claimed for the whole write, so
    /// data moves without the map lock and writes to other clusters proceed in parallel.
    pub fn write(&self, offset: u64, data: &[u8], hook: AllocHook<'_>) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        if let Some((lo, hi)) = self.unaligned(offset, data.len() as u64) {
            // Encrypted: patch the partial sectors (read, decrypted, under the new bytes).
            let mut whole = vec![0u8; (hi - lo) as usize];
            self.read_sectors(lo, &mut whole)?;
            let at = (offset - lo) as usize;
            whole[at..at + data.len()].copy_from_slice(data);
            return self.write(lo, &whole, hook);
        }
        let cs = self.geo.cluster_size;
        let end = offset + data.len() as u64;
        let first = offset / cs;
        let last = (end - 1) / cs;
        let _claim = self.claim(first, last)?;
        let entries = self.entries(first, last - first + 1)?;
        if entries.iter().any(|e| !matches!(e, Entry::Data(_))) {
            hook()?;
        }
        // Plan under the lock: runs in place, and runs to allocate (space reserved now).
        let mut plan: Vec<Piece> = Vec::new();
        {
            let mut st = self.lock()?;
            let mut k = 0usize;
            while k < entries.len() {
                let gc = first + k as u64;
                let mut n = 1usize;
                if let Entry::Data(h) = entries[k] {
                    while k + n < entries.len() && entries[k + n] == Entry::Data(h + n as u64 * cs)
                    {
                        n += 1;
                    }
                    plan.push(Piece::InPlace {
                        gc,
                        n: n as u64,
                        host: h,
                    });
                } else {
                    while k + n < entries.len()
                        && !(gc + n as u64).is_multiple_of(self.geo.l2_entries)
                        && !matches!(entries[k + n], Entry::Data(_))
                    {
                        n += 1;
                    }
                    let i1 = (gc / self.geo.l2_entries) as usize;
                    // Compressed data may have left the end unaligned.
                    st.end = st.end.next_multiple_of(cs);
                    if st.l1[i1] == 0 {
                        let l2off = st.end;
                        st.end += self.geo.l2_reserve;
                        st.l1[i1] = l2off;
                        st.dirty_l1.insert(i1 as u64);
                        st.dirty_l2.insert(l2off);
                        st.l2
                            .insert(l2off, Arc::new(vec![0u64; self.geo.l2_entries as usize]));
                    }
                    let host = st.end;
                    st.end += n as u64 * cs;
                    plan.push(Piece::Alloc {
                        gc,
                        n: n as u64,
                        host,
                        head: entries[k],
                        tail: entries[k + n - 1],
                    });
                }
                k += n;
            }
        }
        // Move the data without the lock.
        for p in &plan {
            match *p {
                Piece::InPlace { gc, n, host } => {
                    let lo = offset.max(gc * cs);
                    let hi = end.min((gc + n) * cs);
                    self.write_data(
                        lo,
                        host + (lo - gc * cs),
                        &data[(lo - offset) as usize..(hi - offset) as usize],
                    )?;
                }
                Piece::Alloc {
                    gc,
                    n,
                    host,
                    head,
                    tail,
                } => {
                    let lo = offset.max(gc * cs);
                    let hi = end.min((gc + n) * cs);
                    let src = &data[(lo - offset) as usize..(hi - offset) as usize];
                    if lo == gc * cs && hi == (gc + n) * cs {
                        self.write_data(lo, host, src)?;
                        continue;
                    }
                    let mut buf = vec![0u8; (n * cs) as usize];
                    if lo > gc * cs {
                        self.cluster_contents(gc, head, &mut buf[..cs as usize])?;
                    }
                    let lc = gc + n - 1;
                    if hi < (lc + 1) * cs && (lc != gc || lo == gc * cs) {
                        let at = ((lc - gc) * cs) as usize;
                        self.cluster_contents(lc, tail, &mut buf[at..at + cs as usize])?;
                    }
                    buf[(lo - gc * cs) as usize..(hi - gc * cs) as usize].copy_from_slice(src);
                    self.write_data(gc * cs, host, &buf)?;
                }
            }
        }
        // Point the tables at the new clusters.
        let mut st = self.lock()?;
        st.data_unflushed = true;
        for p in &plan {
            if let Piece::Alloc { gc, n, host, .. } = *p {
                for k in 0..n {
                    self.set_entry(&mut st, gc + k, host + k * cs)?;
                }
            }
        }
        self.maybe_flush(&mut st)
    }

    /// Store `bytes` (already encoded, e.g. compressed) for guest cluster `gc`, appended right
    /// after the last used byte as QEMU packs compressed clusters; `entry` turns the host
    /// offset into the L2 entry.
    pub fn write_packed(&self, gc: u64, bytes: &[u8], entry: &dyn Fn(u64) -> u64) -> Result<()> {
        self.check_range(gc * self.geo.cluster_size, 1)?;
        let _claim = self.claim(gc, gc)?;
        let host = {
            let mut st = self.lock()?;
            // Make sure the L2 table exists first, so its space precedes the data.
            let i1 = (gc / self.geo.l2_entries) as usize;
            if st.l1[i1] == 0 {
                // No table: the entry is unallocated; writing it allocates the table.
                self.set_entry(&mut st, gc, 0)?;
            }
            let host = st.end;
            st.end += bytes.len() as u64;
            host
        };
        self.storage.write_at(bytes, host)?;
        let mut st = self.lock()?;
        st.data_unflushed = true;
        self.set_entry(&mut st, gc, entry(host))?;
        self.maybe_flush(&mut st)
    }

    /// Make `[offset, offset+len)` read as zeros: whole clusters become zero clusters where the
    /// format has them (or are left unallocated when nothing shows through), the rest is written.
    pub fn write_zeroes(&self, offset: u64, len: u64, hook: AllocHook<'_>) -> Result<()> {
        self.check_range(offset, len)?;
        let cs = self.geo.cluster_size;
        let end = offset + len;
        let mut pos = offset;
        let has_backing = self.backing().is_some();
        while pos < end {
            let cend = (pos / cs + 1) * cs;
            let hi = cend.min(end);
            let gc = pos / cs;
            let whole = pos.is_multiple_of(cs) && hi == cend;
            let e = self.entries(gc, 1)?[0];
            if e == Entry::Zero || (e == Entry::Unallocated && !has_backing) {
                pos = hi;
                continue;
            }
            match (whole, self.fmt.zero_entry()) {
                (true, Some(z)) if !matches!(e, Entry::Data(_)) => {
                    hook()?;
                    let _claim = self.claim(gc, gc)?;
                    let mut st = self.lock()?;
                    self.set_entry(&mut st, gc, z)?;
                }
                _ => {
                    // Batch whole clusters with the same treatment into one write.
                    let chunk_end = if whole {
                        (end / cs * cs).min(pos + (16 << 20)).max(hi)
                    } else {
                        hi
                    };
                    let zeros = vec![0u8; (chunk_end - pos) as usize];
                    self.write(pos, &zeros, hook)?;
                    pos = chunk_end;
                    continue;
                }
            }
            pos = hi;
        }
        let mut st = self.lock()?;
        self.maybe_flush(&mut st)
    }

    /// Block status of `[offset, offset+len)`, merged into runs.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<LayerExtent>> {
        self.check_range(offset, len)?;
        let cs = self.geo.cluster_size;
        let end = offset + len;
        let first = offset / cs;
        let last = (end - 1) / cs;
        let n = (last - first + 1).min(1 << 16);
        let entries = self.entries(first, n)?;
        let mut out: Vec<LayerExtent> = Vec::new();
        for (k, e) in entries.iter().enumerate() {
            let gc = first + k as u64;
            let lo = offset.max(gc * cs);
            let hi = end.min((gc + 1) * cs);
            let status = match *e {
                Entry::Data(h) => LayerStatus::Data {
                    host_offset: Some(h + (lo - gc * cs)),
                    compressed: false,
                    reads_zero: false,
                },
                Entry::Compressed(_) => LayerStatus::Data {
                    host_offset: None,
                    compressed: true,
                    reads_zero: false,
                },
                Entry::Zero => LayerStatus::Zero { host_offset: None },
                Entry::Unallocated => LayerStatus::Unallocated,
            };
            if let Some(p) = out.last_mut() {
                let merged = match (p.status, status) {
                    (
                        LayerStatus::Data {
                            host_offset: Some(a),
                            ..
                        },
                        LayerStatus::Data {
                            host_offset: Some(b),
                            ..
                        },
                    ) => a + p.length == b,
                    (a, b) => a == b && !matches!(a, LayerStatus::Data { .. }),
                };
                if merged {
                    p.length += hi - lo;
                    continue;
                }
            }
            out.push(LayerExtent {
                start: lo,
                length: hi - lo,
                status,
            });
        }
        Ok(out)
    }

    fn maybe_flush(&self, st: &mut MapState) -> Result<()> {
        let dirty = st.dirty_l2.len() as u64 * self.geo.l2_entries * 8;
        if dirty > DIRTY_BYTES {
            self.flush_locked(st)?;
        }
        Ok(())
    }

    /// Unmap everything, as QEMU's `qcow_make_empty`: a zeroed L1 table made durable, then the
    /// file cut right after it (the L2 tables and clusters it dropped were unreachable already).
    pub fn make_empty(&self) -> Result<()> {
        let mut st = self.lock()?;
        self.flush_locked(&mut st)?;
        st.l1.iter_mut().for_each(|e| *e = 0);
        st.l2.clear();
        let zeros = vec![0u8; (self.geo.l1_entries * 8) as usize];
        self.storage.write_at(&zeros, self.geo.l1_offset)?;
        self.storage.flush()?;
        let len = self.geo.l1_offset + self.geo.l1_entries * 8;
        self.storage.truncate(len)?;
        self.storage.flush()?;
        st.end = len.next_multiple_of(self.geo.cluster_size);
        Ok(())
    }

    /// Write dirty metadata in order: data → flush → L2 tables → flush → L1 → flush.
    pub fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        self.flush_locked(&mut st)
    }

    fn flush_locked(&self, st: &mut MapState) -> Result<()> {
        if st.dirty_l2.is_empty() && st.dirty_l1.is_empty() {
            if st.data_unflushed {
                self.storage.flush()?;
                st.data_unflushed = false;
            }
            return Ok(());
        }
        self.storage.flush()?;
        st.data_unflushed = false;
        let be = self.fmt.big_endian();
        let mut l2s: Vec<u64> = st.dirty_l2.iter().copied().collect();
        l2s.sort_unstable();
        for off in l2s {
            if let Some(t) = st.l2.get(&off) {
                self.storage.write_at(&encode_table(t, be), off)?;
            }
        }
        self.storage.flush()?;
        st.dirty_l2.clear();
        let mut l1s: Vec<u64> = st.dirty_l1.iter().copied().collect();
        l1s.sort_unstable();
        for i in l1s {
            let v = st.l1[i as usize];
            let b = if be { v.to_be_bytes() } else { v.to_le_bytes() };
            self.storage.write_at(&b, self.geo.l1_offset + i * 8)?;
        }
        self.storage.flush()?;
        st.dirty_l1.clear();
        Ok(())
    }
}

/// Decode a table of u64 entries.
pub fn decode_table(raw: &[u8], big_endian: bool) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| {
            let a: [u8; 8] = c.try_into().unwrap_or([0; 8]);
            if big_endian {
                u64::from_be_bytes(a)
            } else {
                u64::from_le_bytes(a)
            }
        })
        .collect()
}

/// Encode a table of u64 entries.
pub fn encode_table(t: &[u64], big_endian: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * 8);
    for v in t {
        out.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    out
}
