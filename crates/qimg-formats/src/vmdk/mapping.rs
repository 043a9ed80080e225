//! One sparse extent: its grain directory and grain tables (loaded lazily, cached), batched
//! lookups and reads (contiguous uncompressed grains become one read; compressed grains are
//! inflated).
//!
//! ```text
//! grain directory: uint32 gde[gd_entries]   sector of each grain table (0: none)
//! grain table:     uint32 gte[512]          sector of each grain (0: unallocated,
//!                                           1: zeroed when FLAG_ZERO_GRAIN)
//! compressed grain (with markers): uint64 lba; uint32 size; uint8 data[size]  (zlib stream)
//! ```
use super::header::{beyond, Marker, SparseHeader, GD_AT_END, MARKER_EOS, MARKER_FOOTER, SECTOR};
use flate2::{Decompress, FlushDecompress, Status};
use qimg_core::{Error, ErrorCode, Result, Storage};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a grain table entry says about one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Not allocated here: the backing layer (or zeros) decides.
    Unallocated,
    /// Zeroed grain (GTE 1 with FLAG_ZERO_GRAIN).
    Zero,
    /// Plain data at this byte offset.
    Data(u64),
    /// A compressed grain starting at this byte offset.
    Compressed(u64),
}

/// A partially written grain of a compressed extent, waiting for the rest of its bytes.
pub struct Pending {
    /// The whole grain.
    pub data: Vec<u8>,
    /// Sectors written so far.
    pub covered: Vec<bool>,
}

/// Mutable state of a sparse extent.
pub struct SparseState {
    /// Grain directory (sector of each table; 0 = none).
    pub gd: Vec<u32>,
    /// Redundant grain directory, when the extent has one.
    pub rgd: Option<Vec<u32>>,
    /// Cached grain tables by directory index.
    pub gts: HashMap<usize, Vec<u32>>,
    /// Tables with unwritten changes.
    pub dirty: HashSet<usize>,
    /// Next free byte offset (sector aligned).
    pub next: u64,
    /// Data written since the last flush of the storage.
    pub data_unflushed: bool,
    /// Partial grains of a compressed extent.
    pub pending: HashMap<u64, Pending>,
    /// Grains whose compressed data is being written (reserved, entry not yet set).
    pub writing: HashSet<u64>,
    /// A VMware-layout stream whose tail (tables, directory, footer) must be written again.
    pub tail_stale: bool,
}

/// One inflated grain for a read: (buffer offset, offset in grain, length, grain bytes).
type Inflated = (usize, usize, usize, Vec<u8>);

/// An opened sparse extent.
pub struct SparseExtent {
    /// The extent file.
    pub storage: Arc<dyn Storage>,
    /// Header (the footer's copy for a VMware stream).
    pub h: SparseHeader,
    /// True when the directory lives in the footer (VMware's streamOptimized layout): tables are
    /// kept in memory and written at the end of the stream on flush.
    pub tail_mode: bool,
    /// Open read-only.
    pub read_only: bool,
    /// State under one lock.
    pub st: Mutex<SparseState>,
}

fn lock_err() -> Error {
    Error::new(ErrorCode::Internal, "vmdk extent lock poisoned")
}

/// Read `n` u32 entries at byte `off`.
fn read_u32s(s: &dyn Storage, off: u64, n: usize) -> Result<Vec<u32>> {
    let mut raw = vec![0u8; n * 4];
    s.read_at(&mut raw, off)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl SparseExtent {
    /// Open the sparse extent in `storage`, checking its header, the footer of a stream, and the
    /// directory's place in the file.
    pub fn open(storage: Arc<dyn Storage>, read_only: bool) -> Result<Self> {
        let size = storage.size()?;
        if size < SECTOR {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in VMDK format (file too short)",
            ));
        }
        let mut b = [0u8; 512];
        storage.read_at(&mut b, 0)?;
        let mut h = SparseHeader::parse(&b)?;
        let mut tail_mode = false;
        if h.gd_offset == GD_AT_END {
            // The footer: marker, header copy, end-of-stream marker, the last three sectors.
            if size < 4 * SECTOR {
                return Err(Error::corrupt("VMDK stream is too short for its footer"));
            }
            let mut f = [0u8; 1536];
            storage.read_at(&mut f, size - 1536)?;
            let fm = Marker::parse(&f[..16]);
            let eos = Marker::parse(&f[1024..1040]);
            if fm.kind != MARKER_FOOTER || fm.size != 0 || eos.kind != MARKER_EOS || eos.val != 0 {
                return Err(Error::corrupt(
                    "Invalid VMDK footer (missing footer or end-of-stream marker)",
                ));
            }
            let fh = SparseHeader::parse(&f[512..1024])?;
            if fh.gd_offset == GD_AT_END
                || fh.capacity != h.capacity
                || fh.grain_size != h.grain_size
            {
                return Err(Error::corrupt("VMDK footer does not match the header"));
            }
            h = fh;
            tail_mode = true;
        }
        let n = h.gd_entries() as usize;
        let gd_bytes = n as u64 * 4;
        let in_file = |sector: u64| {
            sector
                .checked_mul(SECTOR)
                .and_then(|o| o.checked_add(gd_bytes))
                .is_some_and(|e| e <= size)
        };
        if !in_file(h.gd_offset) {
            return Err(beyond("Grain directory", h.gd_offset));
        }
        let gd = read_u32s(&*storage, h.gd_offset * SECTOR, n)?;
        let rgd = if h.flags & super::header::FLAG_RGD != 0 && !tail_mode && h.rgd_offset != 0 {
            if !in_file(h.rgd_offset) {
                return Err(beyond("Redundant grain directory", h.rgd_offset));
            }
            Some(read_u32s(&*storage, h.rgd_offset * SECTOR, n)?)
        } else {
            None
        };
        let ext = SparseExtent {
            storage,
            h,
            tail_mode,
            read_only,
            st: Mutex::new(SparseState {
                gd,
                rgd,
                gts: HashMap::new(),
                dirty: HashSet::new(),
                next: size.next_multiple_of(SECTOR),
                data_unflushed: false,
                pending: HashMap::new(),
                writing: HashSet::new(),
                tail_stale: false,
            }),
        };
        if tail_mode && !read_only {
            // Appending to a finished stream: load every table now (they are rewritten with the
            // directory at the next flush) and write new grains over the old footer.
            let mut st = ext.lock()?;
            if st.gd.iter().filter(|&&e| e != 0).count() > 65536 {
                return Err(Error::unsupported(
                    "VMDK stream has too many grain tables to append to; open it read-only",
                ));
            }
            for i in 0..n {
                if st.gd[i] != 0 {
                    ext.gt(&mut st, i)?;
                    st.dirty.insert(i);
                }
            }
            st.next = size - 1536;
        }
        Ok(ext)
    }

    /// The state lock.
    pub fn lock(&self) -> Result<MutexGuard<'_, SparseState>> {
        self.st.lock().map_err(|_| lock_err())
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.h.capacity * SECTOR
    }

    /// Grain table `i`, loading it (bounded: one table) if needed; `None` when not allocated.
    pub fn gt<'a>(&self, st: &'a mut SparseState, i: usize) -> Result<Option<&'a mut Vec<u32>>> {
        if !st.gts.contains_key(&i) {
            let off =
                *st.gd.get(i).ok_or_else(|| {
                    Error::new(ErrorCode::OutOfRange, "grain beyond the directory")
                })? as u64;
            if off == 0 {
                return Ok(None);
            }
            let n = self.h.gtes_per_gt as usize;
            let size = self.storage.size()?;
            if (off * SECTOR + n as u64 * 4) > size {
                return Err(beyond("Grain table", off));
            }
            let t = read_u32s(&*self.storage, off * SECTOR, n)?;
            if st.gts.len() >= 16384 && st.dirty.is_empty() {
                st.gts.clear();
            }
            st.gts.insert(i, t);
        }
        Ok(st.gts.get_mut(&i))
    }

    /// Decode GTE `v`.
    pub fn decode(&self, v: u32) -> Grain {
        match v {
            0 => Grain::Unallocated,
            1 if self.h.zero_grain() => Grain::Zero,
            v if self.h.compressed() => Grain::Compressed(v as u64 * SECTOR),
            v => Grain::Data(v as u64 * SECTOR),
        }
    }

    /// Entries of `n` grains from grain `g` (one lock hold).
    pub fn grains(&self, g: u64, n: u64) -> Result<Vec<Grain>> {
        let mut st = self.lock()?;
        let per = self.h.gtes_per_gt as u64;
        let mut out = Vec::with_capacity(n as usize);
        for x in g..g + n {
            let v = match self.gt(&mut st, (x / per) as usize)? {
                Some(t) => t[(x % per) as usize],
                None => 0,
            };
            out.push(self.decode(v));
        }
        Ok(out)
    }

    /// Inflate the compressed grain at byte `off` into `out` (one grain).
    pub fn read_compressed(&self, off: u64, out: &mut [u8]) -> Result<()> {
        let gb = self.h.grain_bytes();
        let size = self.storage.size()?;
        if off >= size {
            return Err(beyond("Compressed grain", off / SECTOR));
        }
        let (start, len) = if self.h.markers() {
            let mut m = [0u8; 12];
            self.storage.read_at(&mut m, off)?;
            let len = u32::from_le_bytes([m[8], m[9], m[10], m[11]]) as u64;
            if len == 0 || len > 2 * gb + 1024 {
                return Err(Error::corrupt(format!(
                    "Invalid compressed grain size {len} at 0x{off:x}"
                )));
            }
            (off + 12, len)
        } else {
            (off, (2 * gb).min(size - off))
        };
        if start + len > size {
            return Err(beyond("Compressed grain", off / SECTOR));
        }
        let mut src = vec![0u8; len as usize];
        self.storage.read_at(&mut src, start)?;
        inflate(&src, out).map_err(|e| e.with_offset(off))
    }
}

/// Inflate a zlib stream into `out`; the tail not produced reads as zeros.
pub fn inflate(src: &[u8], out: &mut [u8]) -> Result<()> {
    let mut d = Decompress::new(true);
    let st = d
        .decompress(src, out, FlushDecompress::Finish)
        .map_err(|e| Error::corrupt(format!("Could not inflate a compressed grain: {e}")))?;
    if st != Status::StreamEnd && (d.total_out() as usize) < out.len() {
        return Err(Error::corrupt("Compressed grain is truncated"));
    }
    let n = d.total_out() as usize;
    out[n..].fill(0);
    Ok(())
}

impl SparseExtent {
    /// Read extent bytes `[off, off+buf.len())`: contiguous uncompressed grains in one read,
    /// compressed grains inflated, unallocated ones from `fill` (the backing layer).
    pub fn read(&self, off: u64, buf: &mut [u8], fill: super::alloc::Fill<'_>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let gb = self.h.grain_bytes();
        let first = off / gb;
        let last = (off + buf.len() as u64 - 1) / gb;
        let grains = self.grains(first, last - first + 1)?;
        let mut pos = 0usize;
        let mut i = 0usize;
        let mut jobs: Vec<(u64, usize, usize, usize)> = Vec::new();
        let mut file_size: Option<u64> = None;
        while pos < buf.len() {
            let at = off + pos as u64;
            let inner = at % gb;
            let n = ((gb - inner) as usize).min(buf.len() - pos);
            match grains[i] {
                Grain::Data(h) => {
                    // Extend over following grains stored right after this one.
                    let (mut len, mut j) = (n, i);
                    while pos + len < buf.len() {
                        match grains[j + 1] {
                            Grain::Data(h2) if h2 == h + (j + 1 - i) as u64 * gb => {
                                len += (gb as usize).min(buf.len() - pos - len);
                                j += 1;
                            }
                            _ => break,
                        }
                    }
                    if file_size.is_none() {
                        file_size = Some(self.storage.size()?);
                    }
                    if h + inner + len as u64 > file_size.unwrap_or(0) {
                        // A grain past the end of the file: corrupt, never read as zeros.
                        return Err(beyond("Grain", h / SECTOR));
                    }
                    self.storage.read_at(&mut buf[pos..pos + len], h + inner)?;
                    pos += len;
                    i = j + 1;
                    continue;
                }
                Grain::Zero => buf[pos..pos + n].fill(0),
                Grain::Compressed(h) => jobs.push((h, pos, inner as usize, n)),
                Grain::Unallocated => {
                    let st = self.lock()?;
                    if let Some(p) = st.pending.get(&(at / gb)) {
                        buf[pos..pos + n]
                            .copy_from_slice(&p.data[inner as usize..inner as usize + n]);
                    } else {
                        drop(st);
                        fill(at, &mut buf[pos..pos + n])?;
                    }
                }
            }
            pos += n;
            i += 1;
        }
        self.read_compressed_batch(&jobs, buf)
    }

    /// Inflate compressed grains `(host, buf offset, offset in grain, length)` into `buf`: one
    /// read covers grains stored close together, and they are inflated on several threads.
    fn read_compressed_batch(
        &self,
        jobs: &[(u64, usize, usize, usize)],
        buf: &mut [u8],
    ) -> Result<()> {
        let gb = self.h.grain_bytes() as usize;
        if jobs.len() < 2 || !self.h.markers() {
            let mut tmp = vec![0u8; gb];
            for &(h, pos, inner, n) in jobs {
                self.read_compressed(h, &mut tmp)?;
                buf[pos..pos + n].copy_from_slice(&tmp[inner..inner + n]);
            }
            return Ok(());
        }
        let size = self.storage.size()?;
        let lo = jobs.iter().map(|j| j.0).min().unwrap_or(0);
        let hi = jobs
            .iter()
            .map(|j| j.0)
            .max()
            .unwrap_or(0)
            .saturating_add(12 + 2 * gb as u64 + 1024)
            .min(size);
        if hi <= lo || hi - lo > 64 << 20 {
            let mut tmp = vec![0u8; gb];
            for &(h, pos, inner, n) in jobs {
                self.read_compressed(h, &mut tmp)?;
                buf[pos..pos + n].copy_from_slice(&tmp[inner..inner + n]);
            }
            return Ok(());
        }
        let mut span = vec![0u8; (hi - lo) as usize];
        self.storage.read_at(&mut span, lo)?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(jobs.len().div_ceil(4))
            .max(1);
        let per = jobs.len().div_ceil(threads);
        let span = &span;
        let results: Vec<Result<Vec<Inflated>>> = std::thread::scope(|s| {
            let hs: Vec<_> = jobs
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        let mut out = Vec::with_capacity(chunk.len());
                        for &(h, pos, inner, n) in chunk {
                            let at = (h - lo) as usize;
                            if at + 12 > span.len() {
                                return Err(super::header::beyond("Compressed grain", h / SECTOR));
                            }
                            let len = u32::from_le_bytes([
                                span[at + 8],
                                span[at + 9],
                                span[at + 10],
                                span[at + 11],
                            ]) as usize;
                            if len == 0 || len > 2 * gb + 1024 || at + 12 + len > span.len() {
                                return Err(Error::corrupt(format!(
                                    "Invalid compressed grain size {len} at 0x{h:x}"
                                )));
                            }
                            let mut g = vec![0u8; gb];
                            inflate(&span[at + 12..at + 12 + len], &mut g)
                                .map_err(|e| e.with_offset(h))?;
                            out.push((pos, inner, n, g));
                        }
                        Ok(out)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorCode::Internal,
                            "an inflate thread panicked",
                        ))
                    })
                })
                .collect()
        });
        for r in results {
            for (pos, inner, n, g) in r? {
                buf[pos..pos + n].copy_from_slice(&g[inner..inner + n]);
            }
        }
        Ok(())
    }
}
