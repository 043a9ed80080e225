//! The qcow2 [`BlockDriver`]: open, read, write, zeroes, discard, block status, flush, resize.
//!
//! Metadata lives behind one mutex. Reads map under the lock and move data outside it; writes
//! hold it. Flush order: data → flush → refcount blocks/table → flush → L2 tables, L1 → flush →
//! queued frees → flush, so a crash can leak clusters but never corrupt the image.
use super::alloc::Refcounts;
use super::bitmap::Bitmaps;
use super::compress;
use super::header::{self, Header};
use super::mapping::{
    self, decode_l1, decode_l2_ext, decode_l2_in, encode_l2_ext, Cluster, L2Cache, Sub, COPIED,
    OFFSET_MASK, SUBCLUSTERS, ZERO,
};
use super::snapshot::{self, Snapshot};
use crate::legacy_aes::SectorCipher;
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, CompressedCluster, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, Result,
    Storage,
};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// L2 cache size in bytes (bounded so memory stays small for any image).
const L2_CACHE_BYTES: u64 = 32 << 20;

/// Mutable metadata of an open image.
pub(super) struct State {
    pub(super) header: Header,
    pub(super) l1: Vec<u64>,
    pub(super) l1_dirty: bool,
    pub(super) l2: L2Cache,
    pub(super) rc: Refcounts,
    /// The lazy-refcounts dirty bit is set on disk.
    pub(super) dirty_on_disk: bool,
    closed: bool,
    /// `None` until block status first asks: does the image look metadata-preallocated?
    metadata_prealloc: Option<bool>,
    /// Next free byte in the cluster that compressed clusters are being packed into (0: none).
    compressed_cursor: u64,
    /// Metadata clusters for the overlap check (built on first use; `None` after frees).
    pub(super) overlap: Option<super::overlap::MetadataClusters>,
    /// Persistent bitmaps (empty unless the image has a valid bitmaps extension).
    pub(super) bitmaps: Option<Bitmaps>,
    /// The snapshot table, and its length in bytes on disk.
    pub(super) snapshots: Vec<Snapshot>,
    pub(super) snap_table_len: u64,
}

/// An open qcow2 image.
pub struct Qcow2Driver {
    pub(super) storage: Arc<dyn Storage>,
    read_only: bool,
    pub(super) cluster_bits: u32,
    pub(super) cs: u64,
    /// Header compression type (0 zlib, 1 zstd).
    compression: u8,
    /// Extended L2 entries: 16 bytes each, with 32 subclusters per cluster.
    pub(super) ext_l2: bool,
    pub(super) state: Mutex<State>,
    backing: RwLock<Option<Arc<dyn BlockDriver>>>,
    /// Guest data lives in an external data file (incompatible bit 2): host offsets of data
    /// clusters are offsets in that file, equal to the guest offset, and are not refcounted.
    pub(super) data_file: bool,
    /// The external data file is a valid raw image (autoclear bit 1).
    pub(super) data_raw: bool,
    /// The external data file's storage, attached by the graph builder.
    data: RwLock<Option<Arc<dyn Storage>>>,
    /// Header `crypt_method`: 0 none, 1 legacy AES, 2 LUKS.
    pub(super) crypt_method: u32,
    /// The data cipher, when encrypted and opened with the key (not for `info`).
    pub(super) cipher: Option<Arc<dyn SectorCipher>>,
    /// The LUKS master key, when LUKS-encrypted and opened with the key (`amend` adds slots).
    pub(super) luks_master_key: Option<Vec<u8>>,
    /// `format-specific` `encrypt` object for `info` (`{"format": "aes"}`, LUKS details).
    pub(super) encrypt_info: Option<serde_json::Value>,
}

/// One planned piece of a read.
enum ReadPiece {
    Host(u64),
    Zero,
    Backing,
    /// A compressed cluster's L2 entry and the offset of the wanted bytes within the cluster.
    Compressed(u64, usize),
}

impl Qcow2Driver {
    /// Open and validate a qcow2 image.
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let file_size = storage.size()?;
        let mut first = vec![0u8; 4096.min(file_size.max(112)) as usize];
        storage.read_at(&mut first, 0)?;
        if file_size < 72 {
            return Err(Error::corrupt(
                "Image is not in qcow2 format (header truncated)",
            ));
        }
        let bits = u32::from_be_bytes([first[20], first[21], first[22], first[23]]);
        if (9..=21).contains(&bits) && (1u64 << bits) > first.len() as u64 {
            first = vec![0u8; (1u64 << bits).min(file_size) as usize];
            storage.read_at(&mut first, 0)?;
        }
        let header = Header::parse(&first, file_size)?;
        check_features(&header, opts.read_only)?;
        let crypto = super::crypto::open_crypto(&storage, &header, file_size, opts)?;
        let bitmaps = Bitmaps::load(storage.as_ref(), &header, file_size)?;
        let cs = header.cluster_size();
        let mut raw = vec![0u8; header.l1_size as usize * 8];
        storage.read_at(&mut raw, header.l1_table_offset)?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let rc = Refcounts::load(
            storage.as_ref(),
            header.refcount_table_offset,
            header.refcount_table_clusters,
            header.cluster_bits,
            header.refcount_order,
            file_size,
        )?;
        let (snapshots, snap_table_len) =
            snapshot::read_table(storage.as_ref(), &header, file_size)?;
        let dirty = header.incompatible & header::INCOMPAT_DIRTY != 0;
        let data_file = header.incompatible & header::INCOMPAT_DATA_FILE != 0;
        let data_raw = data_file && header.autoclear & header::AUTOCLEAR_DATA_FILE_RAW != 0;
        let drv = Qcow2Driver {
            storage,
            read_only: opts.read_only,
            cluster_bits: header.cluster_bits,
            cs,
            compression: header.compression_type,
            ext_l2: header.l2_entry_bytes() == 16,
            state: Mutex::new(State {
                header,
                l1,
                l1_dirty: false,
                l2: L2Cache::new((L2_CACHE_BYTES / cs) as usize),
                rc,
                dirty_on_disk: dirty,
                closed: false,
                metadata_prealloc: None,
                compressed_cursor: 0,
                overlap: None,
                bitmaps: Some(bitmaps),
                snapshots,
                snap_table_len,
            }),
            backing: RwLock::new(None),
            data_file,
            data_raw,
            data: RwLock::new(None),
            crypt_method: crypto.method,
            cipher: crypto.cipher,
            luks_master_key: crypto.master_key,
            encrypt_info: crypto.info,
        };
        if !opts.read_only {
            let mut st = drv.lock()?;
            if dirty {
                // Lazy refcounts left dirty by a crash: rebuild them from the tables, as QEMU does.
                drv.repair_locked(&mut st, qimg_core::RepairMode::All)?;
                drv.flush_locked(&mut st)?;
                st.header.incompatible &= !header::INCOMPAT_DIRTY;
                drv.write_header_field(&st, 72, &st.header.incompatible.to_be_bytes())?;
                drv.storage.flush()?;
                st.dirty_on_disk = false;
            }
            drv.bitmaps_open_writable(&mut st)?;
        }
        Ok(drv)
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "qcow2 state lock poisoned"))?;
        if st.closed {
            return Err(Error::invalid("the image is closed"));
        }
        Ok(st)
    }

    /// True if the image was opened read-only.
    pub(super) fn read_only(&self) -> bool {
        self.read_only
    }

    /// Set the bits of tracking bitmaps for a guest write (lock held).
    fn mark_dirty(st: &mut State, offset: u64, len: u64) {
        if let Some(b) = st.bitmaps.as_mut() {
            b.mark(offset, len);
        }
    }

    pub(super) fn l2_entries(&self) -> u64 {
        self.cs / 8 / self.l2_stride() as u64
    }

    /// u64 words per L2 entry: 2 with extended L2 entries (entry, bitmap), else 1.
    pub(super) fn l2_stride(&self) -> usize {
        if self.ext_l2 {
            2
        } else {
            1
        }
    }

    /// Subcluster size (a 32nd of the cluster with extended L2 entries).
    fn sc_size(&self) -> u64 {
        self.cs / SUBCLUSTERS
    }

    pub(super) fn write_header_field(&self, _st: &State, offset: u64, bytes: &[u8]) -> Result<()> {
        self.storage.write_at(bytes, offset)
    }

    fn bounds(&self, st: &State, offset: u64, len: u64) -> Result<()> {
        let size = st.header.size;
        crate::guard::in_range(offset, len, size, self.storage.name())
    }

    pub(super) fn begin_write(&self, st: &mut State) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())?;
        if st.header.compatible & header::COMPAT_LAZY_REFCOUNTS != 0 && !st.dirty_on_disk {
            st.header.incompatible |= header::INCOMPAT_DIRTY;
            self.write_header_field(st, 72, &st.header.incompatible.to_be_bytes())?;
            self.storage.flush()?;
            st.dirty_on_disk = true;
        }
        Ok(())
    }

    /// The mapping of guest cluster `gc`.
    pub(super) fn lookup(&self, st: &mut State, gc: u64) -> Result<Cluster> {
        let l2e = self.l2_entries();
        let l1i = (gc / l2e) as usize;
        let Some(&l1e) = st.l1.get(l1i) else {
            return Ok(Cluster::Unallocated);
        };
        let l2off = decode_l1(l1e, self.cluster_bits)?;
        if l2off == 0 {
            return Ok(Cluster::Unallocated);
        }
        self.check_host(st, l2off, "L2 table")?;
        let t = st.l2.get(self.storage.as_ref(), l2off, self.cs)?;
        let i = (gc % l2e) as usize;
        let c = if self.ext_l2 {
            decode_l2_ext(
                t.entries[2 * i],
                t.entries[2 * i + 1],
                self.cluster_bits,
                self.data_file,
            )?
        } else {
            decode_l2_in(t.entries[i], self.cluster_bits, self.data_file)?
        };
        if let Cluster::Data { host, .. }
        | Cluster::Zero(Some(host))
        | Cluster::Mixed {
            host: Some(host), ..
        } = c
        {
            if !self.data_file {
                self.check_host(st, host, "Data cluster")?;
            }
        }
        Ok(c)
    }

    /// Where guest data is stored: the external data file when the image has one (an error if
    /// it was not attached), else the image file itself.
    pub(super) fn data_storage(&self) -> Result<Arc<dyn Storage>> {
        if !self.data_file {
            return Ok(self.storage.clone());
        }
        self.data
            .read()
            .map_err(|_| Error::new(ErrorCode::Internal, "data file lock poisoned"))?
            .clone()
            .ok_or_else(|| {
                Error::unsupported(
                    "The image's external data file was not opened ('data-file' is required)",
                )
                .with_path(self.storage.name())
            })
    }

    /// Refuse a host cluster offset at or past the end of the image file (a hostile or torn
    /// mapping; the file never ends before a cluster this driver allocated).
    pub(super) fn check_host(&self, st: &State, host: u64, what: &str) -> Result<()> {
        if host >= st.rc.end_cluster.saturating_mul(self.cs) {
            return Err(Error::corrupt(format!(
                "{what} offset {host:#x} is beyond the end of the image file"
            ))
            .with_offset(host)
            .with_path(self.storage.name()));
        }
        Ok(())
    }

    /// The L2 table offset for guest cluster `gc`, allocating the table if needed.
    fn ensure_l2(&self, st: &mut State, gc: u64) -> Result<u64> {
        let l1i = (gc / self.l2_entries()) as usize;
        if l1i >= st.l1.len() {
            return Err(Error::corrupt(format!(
                "L1 index {l1i} beyond the L1 table"
            )));
        }
        let cur = decode_l1(st.l1[l1i], self.cluster_bits)?;
        if cur != 0 {
            if st.l1[l1i] & COPIED == 0 {
                // Shared with a snapshot: copy before modifying.
                return self.cow_l2(st, l1i, cur);
            }
            return Ok(cur);
        }
        let off = st.rc.allocate(self.storage.as_ref(), 1)?;
        self.sync_reftable_header(st)?;
        st.l2.insert_new(off, self.l2_entries() as usize);
        self.note_new_l2(st, off);
        st.l1[l1i] = off | COPIED;
        st.l1_dirty = true;
        Ok(off)
    }

    /// Set the L2 entry of guest cluster `gc` (creation and preallocation use it too).
    pub(super) fn set_l2_pub(&self, st: &mut State, gc: u64, entry: u64) -> Result<()> {
        self.set_l2(st, gc, entry)
    }

    /// Allocate `n` host clusters for guest clusters from `gc` (their L2 table first).
    pub(super) fn alloc_for_prealloc(&self, st: &mut State, gc: u64, n: u64) -> Result<u64> {
        self.ensure_l2(st, gc)?;
        let host = st.rc.allocate(self.storage.as_ref(), n)?;
        self.sync_reftable_header(st)?;
        Ok(host)
    }

    /// Host offset of guest cluster `gc` (0 if not allocated).
    pub(super) fn host_of(&self, st: &mut State, gc: u64) -> Result<u64> {
        Ok(match self.lookup(st, gc)? {
            Cluster::Data { host, .. } | Cluster::Zero(Some(host)) => host,
            _ => 0,
        })
    }

    fn set_l2(&self, st: &mut State, gc: u64, entry: u64) -> Result<()> {
        let l2off = self.ensure_l2(st, gc)?;
        let idx = (gc % self.l2_entries()) as usize;
        let t = st.l2.get(self.storage.as_ref(), l2off, self.cs)?;
        if self.ext_l2 {
            let (e, bitmap) = encode_l2_ext(entry);
            t.entries[2 * idx] = e;
            t.entries[2 * idx + 1] = bitmap;
        } else {
            t.entries[idx] = entry;
        }
        t.dirty = true;
        Ok(())
    }

    /// After an allocation: if the refcount table moved, point the header at it.
    pub(super) fn sync_reftable_header(&self, st: &mut State) -> Result<()> {
        if let Some((off, clusters)) = st.rc.table_moved.take() {
            st.header.refcount_table_offset = off;
            st.header.refcount_table_clusters = clusters;
            let mut b = off.to_be_bytes().to_vec();
            b.extend_from_slice(&clusters.to_be_bytes());
            self.storage.write_at(&b, 48)?;
            self.storage.flush()?;
        }
        Ok(())
    }

    /// Read guest bytes of this layer into `buf`, reading the backing layer where unallocated.
    fn read_backing(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let backing = self
            .backing
            .read()
            .map_err(|_| Error::new(ErrorCode::Internal, "backing lock poisoned"))?
            .clone();
        match backing {
            None => buf.fill(0),
            Some(b) => {
                let bsize = b.virtual_size();
                let n = bsize.saturating_sub(offset).min(buf.len() as u64) as usize;
                if n > 0 {
                    b.read(offset, &mut buf[..n])?;
                }
                buf[n..].fill(0);
            }
        }
        Ok(())
    }

    fn has_backing(&self) -> bool {
        self.backing.read().map(|b| b.is_some()).unwrap_or(false)
    }

    /// Write `data` at guest `offset` (lock held).
    fn write_locked(&self, st: &mut State, offset: u64, data: &[u8]) -> Result<()> {
        let cs = self.cs;
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            // A run of clusters needing allocation, or one in-place run with contiguous host offsets.
            let gc = pos / cs;
            let within = pos % cs;
            let take = (cs - within).min(end - pos);
            match self.lookup(st, gc)? {
                Cluster::Data { host, copied: true } => {
                    // Extend over following in-place clusters with contiguous host offsets.
                    let mut len = take;
                    let mut next_host = host + cs;
                    while pos + len < end {
                        match self.lookup(st, (pos + len) / cs)? {
                            Cluster::Data {
                                host: h,
                                copied: true,
                            } if h == next_host => {
                                len += (cs).min(end - pos - len);
                                next_host += cs;
                            }
                            _ => break,
                        }
                    }
                    let s = (pos - offset) as usize;
                    self.check_overlap(st, host + within, len)?;
                    self.write_data(pos, host + within, &data[s..s + len as usize])?;
                    pos += len;
                }
                _ => {
                    // Count following clusters that also need allocation (stop at in-place ones).
                    let mut n = 1u64;
                    while pos - within + n * cs < end {
                        match self.lookup(st, gc + n)? {
                            Cluster::Data { copied: true, .. } => break,
                            _ => n += 1,
                        }
                        if n >= 4096 || n >= st.rc.max_run() {
                            break;
                        }
                    }
                    // L2 tables first, so data runs stay contiguous.
                    for k in 0..n {
                        if k == 0 || (gc + k).is_multiple_of(self.l2_entries()) {
                            self.ensure_l2(st, gc + k)?;
                        }
                    }
                    // External data files are not refcounted: a cluster lives at its guest offset.
                    let host = if self.data_file {
                        gc * cs
                    } else {
                        let h = st.rc.allocate(self.storage.as_ref(), n)?;
                        self.sync_reftable_header(st)?;
                        h
                    };
                    self.check_overlap(st, host, n * cs)?;
                    let run_start = gc * cs;
                    let run_end = (gc + n) * cs;
                    let copy_end = run_end.min(end);
                    let full = within == 0 && copy_end == run_end;
                    if full {
                        let s = (pos - offset) as usize;
                        self.write_data(pos, host, &data[s..s + (run_end - pos) as usize])?;
                    } else {
                        let mut buf = vec![0u8; (n * cs) as usize];
                        for k in 0..n {
                            let g = gc + k;
                            let (a, b) = ((g * cs).max(pos), ((g + 1) * cs).min(end));
                            let covers = a == g * cs && b == (g + 1) * cs;
                            if !covers {
                                let slot = &mut buf[(k * cs) as usize..((k + 1) * cs) as usize];
                                self.fill_base(st, g, slot)?;
                            }
                        }
                        let s = (pos - offset) as usize;
                        let d = (pos - run_start) as usize;
                        let len = (copy_end - pos) as usize;
                        buf[d..d + len].copy_from_slice(&data[s..s + len]);
                        self.write_data(run_start, host, &buf)?;
                    }
                    for k in 0..n {
                        let old = self.lookup(st, gc + k)?;
                        self.free_cluster_of(st, old);
                        self.set_l2(st, gc + k, (host + k * cs) | COPIED)?;
                    }
                    pos = copy_end;
                }
            }
        }
        self.maybe_shrink_cache(st)
    }

    /// The current contents of guest cluster `gc` (for copy-on-write of a partial write).
    fn fill_base(&self, st: &mut State, gc: u64, slot: &mut [u8]) -> Result<()> {
        match self.lookup(st, gc)? {
            Cluster::Unallocated => self.read_backing(gc * self.cs, slot),
            Cluster::Zero(_) => {
                slot.fill(0);
                Ok(())
            }
            Cluster::Data { host, .. } => self.read_data(gc * self.cs, host, slot),
            Cluster::Compressed(entry) => self.read_compressed(entry, slot),
            c @ Cluster::Mixed { .. } => {
                let sc = self.sc_size();
                for (i, part) in slot.chunks_mut(sc as usize).enumerate() {
                    match c.sub(i as u32, sc) {
                        Sub::Data(h) => self.read_data(gc * self.cs + i as u64 * sc, h, part)?,
                        Sub::Zero(_) => part.fill(0),
                        Sub::Unallocated => {
                            self.read_backing(gc * self.cs + i as u64 * sc, part)?
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Inflate compressed cluster `entry` into `slot` (one cluster).
    fn read_compressed(&self, entry: u64, slot: &mut [u8]) -> Result<()> {
        let (host, len) = compress::locate(entry, self.cluster_bits);
        let mut input = vec![0u8; len as usize];
        self.storage.read_at(&mut input, host)?;
        compress::decompress(self.compression, &input, slot).map_err(|e| e.with_offset(host))
    }

    /// Queue the host space of a cluster's old mapping for freeing (a compressed cluster holds
    /// one reference on every host cluster its data touches).
    pub(super) fn free_cluster_of(&self, st: &mut State, old: Cluster) {
        if self.data_file {
            // Data clusters of an external data file hold no references.
            return;
        }
        match old {
            Cluster::Data { host, .. }
            | Cluster::Zero(Some(host))
            | Cluster::Mixed {
                host: Some(host), ..
            } => st.rc.free_later(host, 1),
            Cluster::Compressed(entry) => {
                let (host, len) = compress::locate(entry, self.cluster_bits);
                for c in host / self.cs..=(host + len - 1) / self.cs {
                    st.rc.free_later(c * self.cs, 1);
                }
            }
            _ => {}
        }
    }

    pub(super) fn maybe_shrink_cache(&self, st: &mut State) -> Result<()> {
        if st.l2.over_capacity() || st.rc.over_capacity() {
            // Dirty tables may only be written once the refcounts they rely on are durable.
            self.flush_locked(st)?;
            st.l2.evict_clean();
        }
        Ok(())
    }

    /// The flush sequence (lock held).
    pub(super) fn flush_locked(&self, st: &mut State) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let meta = st.rc.is_dirty() || st.l2.is_dirty() || st.l1_dirty;
        self.storage.flush()?;
        if !meta && !st.rc.has_pending_frees() {
            return Ok(());
        }
        // Tables may have moved or been freed: rebuild the overlap map when next needed.
        st.overlap = None;
        if st.rc.is_dirty() {
            st.rc.write_back(self.storage.as_ref())?;
            self.storage.flush()?;
        }
        if st.l2.is_dirty() || st.l1_dirty {
            st.l2.write_back(self.storage.as_ref())?;
            if st.l1_dirty {
                let mut raw = Vec::with_capacity(st.l1.len() * 8);
                for e in &st.l1 {
                    raw.extend_from_slice(&e.to_be_bytes());
                }
                self.storage.write_at(&raw, st.header.l1_table_offset)?;
                st.l1_dirty = false;
            }
            self.storage.flush()?;
        }
        if st.rc.has_pending_frees() {
            // A freed cluster may be the one compressed clusters were packed into.
            st.compressed_cursor = 0;
            st.rc.apply_frees(self.storage.as_ref())?;
            st.rc.write_back(self.storage.as_ref())?;
            self.storage.flush()?;
        }
        Ok(())
    }

    /// QEMU's heuristic: more clusters counted in use than the host file really allocates
    /// (beyond 10%) means metadata preallocation, and only then does block status ask the host
    /// file which allocated clusters are holes.
    fn detect_metadata_prealloc(&self, st: &mut State) -> Result<bool> {
        let real = self.storage.allocated_bytes()? / self.cs;
        let threshold = (real * 10 / 9).max(real + 2);
        let clusters = self.storage.size()?.div_ceil(self.cs);
        if clusters > 1 << 27 {
            // Only a heuristic: do not spend minutes on a huge sparse file.
            return Ok(false);
        }
        let mut counted = 0;
        for c in 0..clusters {
            if st.rc.get(self.storage.as_ref(), c)? > 0 {
                counted += 1;
                if counted > threshold {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Guest clusters wholly inside `[offset, offset+len)`.
    fn whole_clusters(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        offset.div_ceil(self.cs)..(offset + len) / self.cs
    }

    /// True if guest cluster `gc` currently reads as zeros.
    fn reads_zero(&self, st: &mut State, gc: u64) -> Result<bool> {
        Ok(match self.lookup(st, gc)? {
            Cluster::Zero(_) => true,
            Cluster::Unallocated => !self.has_backing() || self.backing_size() <= gc * self.cs,
            _ => false,
        })
    }

    fn backing_size(&self) -> u64 {
        self.backing
            .read()
            .ok()
            .and_then(|b| b.as_ref().map(|d| d.virtual_size()))
            .unwrap_or(0)
    }

    /// Write explicit zeros over a sub-cluster range unless it already reads as zeros.
    /// The range may touch two clusters (a request with no whole cluster inside): each part is
    /// checked on its own.
    fn zero_partial(&self, st: &mut State, offset: u64, len: u64) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let stop = ((pos / self.cs + 1) * self.cs).min(end);
            if !self.reads_zero(st, pos / self.cs)? {
                self.write_locked(st, pos, &vec![0u8; (stop - pos) as usize])?;
            }
            pos = stop;
        }
        Ok(())
    }

    /// Make guest cluster `gc` unallocated, freeing what it pointed to.
    pub(super) fn clear_entry(&self, st: &mut State, gc: u64) -> Result<()> {
        self.begin_write(st)?;
        self.set_entry_freeing(st, gc, 0, true)?;
        self.maybe_shrink_cache(st)
    }

    fn set_entry_freeing(&self, st: &mut State, gc: u64, new: u64, free_old: bool) -> Result<()> {
        let old = self.lookup(st, gc)?;
        if free_old {
            self.free_cluster_of(st, old);
        }
        self.set_l2(st, gc, new)
    }
}

/// Refuse what this driver cannot handle safely.
impl Qcow2Driver {
    /// Place compressed bytes `z` for the cluster at guest `offset`, packed byte by byte after
    /// the previous compressed cluster when they fit in its host cluster (one more reference to
    /// it), as QEMU packs them, otherwise at a freshly allocated cluster. The bytes up to the next
    /// 512-byte boundary are written too (zeros), so the sector span the L2 entry names always
    /// lies inside the file: some readers (7-Zip) refuse a span that runs past the end.
    fn store_compressed(&self, offset: u64, z: &[u8]) -> Result<()> {
        let cs = self.cs;
        let mut st = self.lock()?;
        self.bounds(&st, offset, 1)?;
        self.begin_write(&mut st)?;
        let len = z.len() as u64;
        let cur = st.compressed_cursor;
        let host = if cur != 0 && cur % cs != 0 && cur % cs + len <= cs {
            // Pack into the current cluster: one more compressed cluster references it.
            let c = cur / cs;
            let r = st.rc.get(self.storage.as_ref(), c)?;
            st.rc.set(self.storage.as_ref(), c, r + 1)?;
            cur
        } else {
            let h = st.rc.allocate(self.storage.as_ref(), len.div_ceil(cs))?;
            self.sync_reftable_header(&mut st)?;
            h
        };
        st.compressed_cursor = host + len;
        let padded_end = ((host + len).div_ceil(512) * 512).min((host / cs + 1) * cs);
        let mut out = z.to_vec();
        out.resize((padded_end - host).max(len) as usize, 0);
        self.check_overlap(&mut st, host, out.len() as u64)?;
        self.storage.write_at(&out, host)?;
        Self::mark_dirty(&mut st, offset, cs);
        let gc = offset / cs;
        let x = 62 - (self.cluster_bits - 8);
        let extra_sectors = (host + len - 1) / 512 - host / 512;
        let entry = mapping::COMPRESSED | (extra_sectors << x) | host;
        let old = self.lookup(&mut st, gc)?;
        self.free_cluster_of(&mut st, old);
        self.set_l2(&mut st, gc, entry)?;
        self.maybe_shrink_cache(&mut st)
    }
}

fn check_features(h: &Header, read_only: bool) -> Result<()> {
    if h.incompatible & header::INCOMPAT_DATA_FILE != 0 && h.data_file.is_none() {
        // QEMU then needs the data file given as an option, which qimg does not take yet.
        return Err(Error::unsupported(
            "'data-file' is required for this image (it names no external data file)",
        ));
    }
    let known = header::INCOMPAT_DIRTY
        | header::INCOMPAT_CORRUPT
        | header::INCOMPAT_COMPRESSION
        | header::INCOMPAT_EXTL2
        | header::INCOMPAT_DATA_FILE;
    let unknown = h.incompatible & !known;
    if unknown != 0 {
        let names: Vec<String> = (0..64)
            .filter(|b| unknown & (1 << b) != 0)
            .map(|b| match h.feature_name(0, b as u8) {
                Some(n) => n.to_string(),
                None => format!("Unknown incompatible feature: {:x}", 1u64 << b),
            })
            .collect();
        return Err(Error::unsupported(format!(
            "Unsupported qcow2 feature(s): {}",
            names.join(", ")
        )));
    }
    if h.compression_type > compress::ZSTD {
        return Err(Error::unsupported(format!(
            "Unknown compression type {}",
            h.compression_type
        )));
    }
    if h.compression_type != compress::ZLIB && h.incompatible & header::INCOMPAT_COMPRESSION == 0 {
        return Err(Error::corrupt(
            "Compression type differs from zlib, but the compression type bit is not set",
        ));
    }
    if h.incompatible & header::INCOMPAT_CORRUPT != 0 && !read_only {
        return Err(Error::corrupt(
            "qcow2: Image is corrupt; cannot be opened read/write",
        ));
    }
    Ok(())
}

impl BlockDriver for Qcow2Driver {
    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.state.lock().map(|s| s.header.size).unwrap_or(0)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if let Some((lo, hi)) = self.crypt_unaligned(offset, buf.len() as u64)? {
            let mut whole = vec![0u8; (hi - lo) as usize];
            self.read(lo, &mut whole)?;
            let at = (offset - lo) as usize;
            buf.copy_from_slice(&whole[at..at + buf.len()]);
            return Ok(());
        }
        let cs = self.cs;
        let mut plan: Vec<(usize, usize, ReadPiece)> = Vec::new();
        {
            let mut st = self.lock()?;
            self.bounds(&st, offset, buf.len() as u64)?;
            let mut pos = offset;
            let end = offset + buf.len() as u64;
            while pos < end {
                let gc = pos / cs;
                let within = pos % cs;
                let mut take = (cs - within).min(end - pos) as usize;
                let piece = match self.lookup(&mut st, gc)? {
                    Cluster::Data { host, .. } => ReadPiece::Host(host + within),
                    Cluster::Zero(_) => ReadPiece::Zero,
                    Cluster::Unallocated => ReadPiece::Backing,
                    Cluster::Compressed(entry) => ReadPiece::Compressed(entry, within as usize),
                    c @ Cluster::Mixed { .. } => {
                        // One subcluster at a time; neighbours merge below.
                        let sc = self.sc_size();
                        take = take.min((sc - within % sc) as usize);
                        match c.sub((within / sc) as u32, sc) {
                            Sub::Data(h) => ReadPiece::Host(h + within % sc),
                            Sub::Zero(_) => ReadPiece::Zero,
                            Sub::Unallocated => ReadPiece::Backing,
                        }
                    }
                };
                let at = (pos - offset) as usize;
                match (plan.last_mut(), &piece) {
                    (Some((s, l, ReadPiece::Host(h))), ReadPiece::Host(nh))
                        if *h + *l as u64 == *nh && *s + *l == at =>
                    {
                        *l += take
                    }
                    (Some((s, l, ReadPiece::Zero)), ReadPiece::Zero) if *s + *l == at => *l += take,
                    (Some((s, l, ReadPiece::Backing)), ReadPiece::Backing) if *s + *l == at => {
                        *l += take
                    }
                    _ => plan.push((at, take, piece)),
                }
                pos += take as u64;
            }
        }
        for (at, len, piece) in plan {
            let slot = &mut buf[at..at + len];
            match piece {
                ReadPiece::Host(h) => self.read_data(offset + at as u64, h, slot)?,
                ReadPiece::Zero => slot.fill(0),
                ReadPiece::Backing => self.read_backing(offset + at as u64, slot)?,
                ReadPiece::Compressed(entry, within) => {
                    let mut cluster = vec![0u8; cs as usize];
                    self.read_compressed(entry, &mut cluster)
                        .map_err(|e| e.with_path(self.storage.name()))?;
                    slot.copy_from_slice(&cluster[within..within + len]);
                }
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if let Some((lo, hi)) = self.crypt_unaligned(offset, buf.len() as u64)? {
            // Encrypted: patch the partial sectors (read, decrypted, under the new bytes).
            let mut whole = vec![0u8; (hi - lo) as usize];
            self.read(lo, &mut whole)?;
            let at = (offset - lo) as usize;
            whole[at..at + buf.len()].copy_from_slice(buf);
            return self.write(lo, &whole);
        }
        let mut st = self.lock()?;
        self.bounds(&st, offset, buf.len() as u64)?;
        self.begin_write(&mut st)?;
        Self::mark_dirty(&mut st, offset, buf.len() as u64);
        self.write_locked(&mut st, offset, buf)
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        let mut st = self.lock()?;
        self.bounds(&st, offset, length)?;
        self.begin_write(&mut st)?;
        Self::mark_dirty(&mut st, offset, length);
        if self.data_raw {
            // A raw data file must stay the guest disk: zero it there, keep the identity map.
            return self.data_storage()?.write_zeroes(offset, length, may_unmap);
        }
        let whole = self.whole_clusters(offset, length);
        if whole.is_empty() {
            return self.zero_partial(&mut st, offset, length);
        }
        let head_end = whole.start * self.cs;
        let tail_start = whole.end * self.cs;
        self.zero_partial(&mut st, offset, head_end - offset)?;
        let v3 = st.header.version >= 3;
        let backing = self.has_backing();
        for gc in whole.clone() {
            let cur = self.lookup(&mut st, gc)?;
            if v3 {
                match cur {
                    Cluster::Zero(None) => {}
                    Cluster::Zero(Some(_)) if !may_unmap => {}
                    Cluster::Data { host, copied: true } if !may_unmap => {
                        self.set_l2(&mut st, gc, host | COPIED | ZERO)?
                    }
                    _ => self.set_entry_freeing(&mut st, gc, ZERO, true)?,
                }
            } else if !backing {
                // Version 2 has no zero flag; without a backing file, unallocated reads as zeros.
                if !matches!(cur, Cluster::Unallocated) {
                    self.set_entry_freeing(&mut st, gc, 0, true)?;
                }
            } else {
                let z = vec![0u8; self.cs as usize];
                self.write_locked(&mut st, gc * self.cs, &z)?;
            }
        }
        self.zero_partial(&mut st, tail_start, offset + length - tail_start)?;
        self.maybe_shrink_cache(&mut st)
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        let mut st = self.lock()?;
        self.bounds(&st, offset, length)?;
        self.begin_write(&mut st)?;
        Self::mark_dirty(&mut st, offset, length);
        if self.data_raw {
            // Discarded ranges of a raw data file read as zeros there, as after QEMU's discard.
            return self.data_storage()?.write_zeroes(offset, length, true);
        }
        let v3 = st.header.version >= 3;
        let backing = self.has_backing();
        // As QEMU: only whole clusters are discarded; they then read as zeros on v3 images.
        for gc in self.whole_clusters(offset, length) {
            let cur = self.lookup(&mut st, gc)?;
            let allocated = matches!(
                cur,
                Cluster::Data { .. } | Cluster::Zero(Some(_)) | Cluster::Compressed(_)
            );
            if allocated || (backing && !matches!(cur, Cluster::Zero(None))) {
                self.set_entry_freeing(&mut st, gc, if v3 { ZERO } else { 0 }, true)?;
            }
        }
        self.maybe_shrink_cache(&mut st)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        let cs = self.cs;
        let mut out: Vec<LayerExtent> = Vec::new();
        let recurse;
        {
            let mut st = self.lock()?;
            self.bounds(&st, offset, length)?;
            recurse = match st.metadata_prealloc {
                _ if self.data_file => false,
                Some(v) => v,
                None => {
                    let v = self.detect_metadata_prealloc(&mut st)?;
                    st.metadata_prealloc = Some(v);
                    v
                }
            };
            let end = offset + length;
            let mut pos = offset;
            let limit = 1 << 20; // clusters per call; callers ask again for the rest
            let mut n = 0;
            while pos < end && n < limit {
                let gc = pos / cs;
                let mut take = (cs - pos % cs).min(end - pos);
                let status = match self.lookup(&mut st, gc)? {
                    c @ Cluster::Mixed { .. } => {
                        let sc = self.sc_size();
                        take = take.min(sc - pos % sc);
                        match c.sub((pos % cs / sc) as u32, sc) {
                            Sub::Data(h) => LayerStatus::Data {
                                host_offset: Some(h + pos % sc),
                                compressed: false,
                                reads_zero: false,
                            },
                            Sub::Zero(h) => LayerStatus::Zero {
                                host_offset: h.map(|h| h + pos % sc),
                            },
                            Sub::Unallocated => LayerStatus::Unallocated,
                        }
                    }
                    Cluster::Data { host, .. } => LayerStatus::Data {
                        host_offset: Some(host + pos % cs),
                        compressed: false,
                        reads_zero: false,
                    },
                    Cluster::Compressed(_) => LayerStatus::Data {
                        host_offset: None,
                        compressed: true,
                        reads_zero: false,
                    },
                    Cluster::Zero(h) => LayerStatus::Zero {
                        host_offset: h.map(|h| h + pos % cs),
                    },
                    Cluster::Unallocated => LayerStatus::Unallocated,
                };
                push_merged(
                    &mut out,
                    LayerExtent {
                        start: pos,
                        length: take,
                        status,
                    },
                );
                pos += take;
                n += 1;
            }
        }
        if self.is_encrypted() {
            // QEMU reports no host offsets for encrypted images (no BDRV_BLOCK_OFFSET_VALID).
            return Ok(crate::legacy_aes::hide_offsets(out));
        }
        if !recurse {
            return Ok(out);
        }
        // Allocated clusters over holes in the host file read as zeros (QEMU reports DATA|ZERO).
        let mut split = Vec::with_capacity(out.len());
        for e in out {
            if let LayerStatus::Data {
                host_offset: Some(h),
                compressed: false,
                ..
            } = e.status
            {
                let mut done = 0;
                while done < e.length {
                    let run = self.storage.data_run(h + done, e.length - done)?;
                    let len = run.length.clamp(1, e.length - done);
                    split.push(LayerExtent {
                        start: e.start + done,
                        length: len,
                        status: LayerStatus::Data {
                            host_offset: Some(h + done),
                            compressed: false,
                            reads_zero: !run.data,
                        },
                    });
                    done += len;
                }
            } else {
                split.push(e);
            }
        }
        Ok(split)
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock()?;
        self.flush_locked(&mut st)
    }

    fn close(&self) -> Result<()> {
        let mut st = self.lock()?;
        self.flush_locked(&mut st)?;
        self.store_bitmaps(&mut st, true)?;
        if st.dirty_on_disk && !self.read_only {
            st.header.incompatible &= !header::INCOMPAT_DIRTY;
            self.write_header_field(&st, 72, &st.header.incompatible.to_be_bytes())?;
            self.storage.flush()?;
            st.dirty_on_disk = false;
        }
        st.closed = true;
        Ok(())
    }

    fn info(&self) -> Result<DriverInfo> {
        let st = self.lock()?;
        let h = &st.header;
        let bitmaps = st.bitmaps.as_ref().map(|b| b.infos()).unwrap_or_default();
        let data = if h.version >= 3 {
            let mut d = serde_json::json!({
                "compat": "1.1",
                "compression-type": if h.compression_type == compress::ZSTD { "zstd" } else { "zlib" },
                "lazy-refcounts": h.compatible & header::COMPAT_LAZY_REFCOUNTS != 0,
                "refcount-bits": h.refcount_bits(),
            });
            if let (true, Some(m)) = (self.data_file, d.as_object_mut()) {
                // qemu-img names the data file (and whether it is raw) after refcount-bits.
                m.insert(
                    "data-file".into(),
                    h.data_file.clone().unwrap_or_default().into(),
                );
                m.insert("data-file-raw".into(), self.data_raw.into());
            }
            if let Some(m) = d.as_object_mut() {
                m.insert(
                    "corrupt".into(),
                    (h.incompatible & header::INCOMPAT_CORRUPT != 0).into(),
                );
                m.insert(
                    "extended-l2".into(),
                    (h.incompatible & header::INCOMPAT_EXTL2 != 0).into(),
                );
            }
            if !bitmaps.is_empty() {
                // qemu-img lists bitmaps right after lazy-refcounts.
                if let Some(m) = d.as_object_mut() {
                    let all = std::mem::take(m);
                    for (k, v) in all {
                        let after = k == "lazy-refcounts";
                        m.insert(k, v);
                        if after {
                            m.insert("bitmaps".into(), super::bitmap::info_json(&bitmaps));
                        }
                    }
                }
            }
            d
        } else {
            serde_json::json!({ "compat": "0.10", "compression-type": "zlib", "refcount-bits": h.refcount_bits() })
        };
        Ok(DriverInfo {
            cluster_size: Some(self.cs),
            dirty: h.incompatible & header::INCOMPAT_DIRTY != 0,
            backing_file: h.backing_file.clone(),
            backing_format: h.backing_format.clone(),
            format_specific: Some(serde_json::json!({
                "type": "qcow2",
                "data": super::crypto::with_encrypt_info(data, self.encrypt_info.as_ref()),
            })),
        })
    }

    fn check(&self, repair: qimg_core::RepairMode) -> Result<qimg_core::CheckReport> {
        let mut st = self.lock()?;
        if repair != qimg_core::RepairMode::None && self.read_only {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                "repairing needs a writable image",
            ));
        }
        let r = self.repair_locked(&mut st, repair)?;
        if repair != qimg_core::RepairMode::None {
            self.flush_locked(&mut st)?;
        }
        Ok(r)
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        let mut st = self.lock()?;
        self.begin_write(&mut st)?;
        if new_size < st.header.size {
            return self.shrink_locked(&mut st, new_size);
        }
        self.bitmaps_before_resize(&mut st)?;
        let per_l2 = self.cs * self.l2_entries();
        let need = new_size.div_ceil(per_l2);
        if need * 8 > header::MAX_L1_BYTES {
            return Err(Error::invalid(
                "Failed to grow the L1 table: File too large",
            ));
        }
        if need > st.l1.len() as u64 {
            self.flush_locked(&mut st)?;
            let clusters = (need * 8).div_ceil(self.cs);
            let off = st.rc.allocate(self.storage.as_ref(), clusters)?;
            self.sync_reftable_header(&mut st)?;
            st.rc.write_back(self.storage.as_ref())?;
            let mut l1 = st.l1.clone();
            l1.resize(need as usize, 0);
            let mut raw: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            raw.resize((clusters * self.cs) as usize, 0);
            self.storage.write_at(&raw, off)?;
            self.storage.flush()?;
            let old = (
                st.header.l1_table_offset,
                (st.l1.len() as u64 * 8).div_ceil(self.cs),
            );
            let mut hb = (need as u32).to_be_bytes().to_vec();
            hb.extend_from_slice(&off.to_be_bytes());
            self.storage.write_at(&hb, 36)?;
            self.storage.flush()?;
            st.header.l1_size = need as u32;
            st.header.l1_table_offset = off;
            st.l1 = l1;
            if old.0 != 0 && old.1 > 0 {
                st.rc.free_later(old.0, old.1);
            }
        }
        self.storage.write_at(&new_size.to_be_bytes(), 24)?;
        self.storage.flush()?;
        st.header.size = new_size;
        self.flush_locked(&mut st)?;
        self.bitmaps_after_resize(&mut st, new_size)
    }

    fn truncate(&self, new_size: u64, prealloc: &str) -> Result<()> {
        let mode = crate::options::Preallocation::parse(prealloc)?;
        let old = self.virtual_size();
        self.resize(new_size)?;
        if mode == crate::options::Preallocation::Off || new_size <= old {
            return Ok(());
        }
        let mut st = self.lock()?;
        self.preallocate_grown(&mut st, old, new_size, mode)
    }

    fn amend(&self, options: &[(String, String)]) -> Result<()> {
        let mut o = super::amend::AmendOptions::default();
        // `encrypt.*` (and `force`, which only they use) go to the LUKS key slot amend first.
        let force = options.iter().find(|(k, _)| k == "force");
        let enc: Vec<(String, String)> = options
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("encrypt.")?.to_string(), v.clone())))
            .chain(force.cloned())
            .collect();
        if enc.len() > usize::from(force.is_some()) {
            self.amend_encryption(&enc)?;
        }
        for (k, v) in options {
            if k.starts_with("encrypt.") || k == "force" {
                continue;
            }
            match (k.as_str(), v.as_str()) {
                ("compat", "0.10" | "v2") => o.version = Some(2),
                ("compat", "1.1" | "v3") => o.version = Some(3),
                ("lazy_refcounts", "on" | "true") => o.lazy_refcounts = Some(true),
                ("lazy_refcounts", "off" | "false") => o.lazy_refcounts = Some(false),
                ("refcount_bits", b) => {
                    o.refcount_bits = b
                        .parse::<u32>()
                        .ok()
                        .filter(|b| b.is_power_of_two() && *b <= 64);
                    if o.refcount_bits.is_none() {
                        return Err(Error::invalid(
                            "Refcount width must be a power of two and may not exceed 64 bits",
                        ));
                    }
                }
                _ => return Err(Error::invalid(format!("Invalid parameter '{k}'"))),
            }
        }
        self.amend_with(&o)
    }

    fn compressed_cluster_size(&self) -> Option<u64> {
        (!self.is_encrypted()).then_some(self.cs)
    }

    fn encrypted(&self) -> bool {
        self.is_encrypted()
    }

    fn write_compressed(&self, offset: u64, data: &[u8], level: Option<u32>) -> Result<()> {
        if self.is_encrypted() {
            return Err(Error::unsupported(
                "Compression can't be used with encryption enabled",
            ));
        }
        let cs = self.cs;
        let size = self.virtual_size();
        let last = offset + data.len() as u64 == size;
        if !offset.is_multiple_of(cs)
            || data.len() as u64 > cs
            || (data.len() as u64 != cs && !last)
        {
            return Err(Error::invalid(
                "compressed writes must cover whole clusters",
            ));
        }
        let mut padded;
        let cluster = if data.len() as u64 == cs {
            data
        } else {
            padded = vec![0u8; cs as usize];
            padded[..data.len()].copy_from_slice(data);
            &padded[..]
        };
        // Compress outside the lock, so several clusters compress on several threads.
        let z = compress::compress(self.compression, level, cluster)?;
        if z.len() as u64 >= cs - 512 {
            return self.write(offset, data);
        }
        self.store_compressed(offset, &z)
    }

    fn read_compressed_raw(&self, offset: u64) -> Result<Option<CompressedCluster>> {
        if self.is_encrypted() {
            return Ok(None);
        }
        let entry = {
            let mut st = self.lock()?;
            self.bounds(&st, offset, 1)?;
            match self.lookup(&mut st, offset / self.cs)? {
                Cluster::Compressed(entry) => entry,
                _ => return Ok(None),
            }
        };
        let (host, len) = compress::locate(entry, self.cluster_bits);
        // The sector span may run past the end of the file for the image's last cluster.
        let len = len.min(self.storage.size()?.saturating_sub(host));
        let mut data = vec![0u8; len as usize];
        self.storage.read_at(&mut data, host)?;
        Ok(Some(CompressedCluster {
            kind: self.compression,
            cluster_size: self.cs,
            data,
        }))
    }

    fn write_compressed_raw(&self, offset: u64, c: &CompressedCluster) -> Result<bool> {
        if self.is_encrypted()
            || c.kind != self.compression
            || c.cluster_size != self.cs
            || c.data.is_empty()
            || c.data.len() as u64 > self.cs
            || !offset.is_multiple_of(self.cs)
        {
            return Ok(false);
        }
        self.store_compressed(offset, &c.data)?;
        Ok(true)
    }

    fn set_backing_file(&self, name: Option<&str>, format: Option<&str>) -> Result<()> {
        self.set_backing_reference(name, format)
    }

    fn make_empty(&self) -> Result<()> {
        self.make_empty_clusters()
    }

    fn bitmaps(&self) -> Result<Vec<qimg_core::BitmapInfo>> {
        let st = self.lock()?;
        Ok(st.bitmaps.as_ref().map(|b| b.infos()).unwrap_or_default())
    }

    fn bitmap_apply(&self, actions: &[qimg_core::BitmapAction]) -> Result<()> {
        let mut st = self.lock()?;
        self.bitmaps_apply(&mut st, actions)
    }

    fn bitmap_read(&self, name: &str) -> Result<qimg_core::BitmapData> {
        let mut st = self.lock()?;
        self.bitmaps_read(&mut st, name)
    }

    fn snapshots(&self) -> Result<Vec<qimg_core::SnapshotInfo>> {
        Ok(self
            .lock()?
            .snapshots
            .iter()
            .map(|s| s.info.clone())
            .collect())
    }

    fn snapshot_create(&self, name: &str) -> Result<qimg_core::SnapshotInfo> {
        let mut st = self.lock()?;
        self.snapshot_create_locked(&mut st, name)
    }

    fn snapshot_apply(&self, sel: qimg_core::SnapshotSelector<'_>) -> Result<()> {
        let mut st = self.lock()?;
        self.snapshot_apply_locked(&mut st, sel)?;
        st.metadata_prealloc = None;
        Ok(())
    }

    fn snapshot_delete(&self, sel: qimg_core::SnapshotSelector<'_>) -> Result<()> {
        let mut st = self.lock()?;
        self.snapshot_delete_locked(&mut st, sel)
    }

    fn snapshot_view(&self, sel: qimg_core::SnapshotSelector<'_>) -> Result<Arc<dyn BlockDriver>> {
        self.snapshot_view_of(sel)
    }

    fn set_data_file(&self, data: Option<Arc<dyn Storage>>) -> Result<()> {
        if !self.data_file {
            return Err(Error::invalid(
                "data-file can only be set for images that use an external data file",
            ));
        }
        *self
            .data
            .write()
            .map_err(|_| Error::new(ErrorCode::Internal, "data file lock poisoned"))? = data;
        Ok(())
    }

    fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        self.backing.read().ok().and_then(|b| b.clone())
    }

    fn set_backing(&self, backing: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        *self
            .backing
            .write()
            .map_err(|_| Error::new(ErrorCode::Internal, "backing lock poisoned"))? = backing;
        Ok(())
    }
}

fn push_merged(out: &mut Vec<LayerExtent>, e: LayerExtent) {
    if let Some(last) = out.last_mut() {
        let contiguous = last.start + last.length == e.start;
        let same = match (last.status, e.status) {
            (
                LayerStatus::Data {
                    host_offset: Some(a),
                    compressed: false,
                    ..
                },
                LayerStatus::Data {
                    host_offset: Some(b),
                    compressed: false,
                    ..
                },
            ) => a + last.length == b,
            (
                LayerStatus::Data {
                    compressed: true, ..
                },
                LayerStatus::Data {
                    compressed: true, ..
                },
            ) => true,
            (LayerStatus::Zero { host_offset: None }, LayerStatus::Zero { host_offset: None }) => {
                true
            }
            (
                LayerStatus::Zero {
                    host_offset: Some(a),
                },
                LayerStatus::Zero {
                    host_offset: Some(b),
                },
            ) => a + last.length == b,
            (LayerStatus::Unallocated, LayerStatus::Unallocated) => true,
            _ => false,
        };
        if contiguous && same {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}

/// Host offset mask, re-exported for check.
pub(super) const HOST_MASK: u64 = OFFSET_MASK;
