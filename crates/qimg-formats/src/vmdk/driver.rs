//! The VMDK driver: a descriptor (embedded in a monolithic sparse file, or a separate text file)
//! over a list of extents (sparse, flat or zero), each covering a range of guest sectors.
//!
//! A monolithic sparse or streamOptimized file is its own single extent, as in QEMU (the extent
//! line of its embedded descriptor is not followed). A separate descriptor names extent files;
//! the driver never opens them itself: the graph builder (TypeScript) passes each name through
//! the implicit-open gate and attaches the opened files with [`VmdkDriver::attach_extents`].
use super::descriptor::{random_cid, Descriptor, ExtentLine, ExtentType, MAX_DESCRIPTOR};
use super::header::{SparseHeader, MAGIC, SECTOR};
use super::mapping::{Grain, SparseExtent};
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, CheckReport, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, RepairMode,
    Result, Storage,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The storage behind one extent.
#[derive(Clone)]
pub enum ExtentData {
    /// A flat file from byte `offset` (storage attached later for separate descriptors).
    Flat {
        /// Byte offset in the file.
        offset: u64,
        /// The file, once attached.
        storage: Option<Arc<dyn Storage>>,
    },
    /// Reads as zeros.
    Zero,
    /// A sparse extent, once attached.
    Sparse(Option<Arc<SparseExtent>>),
}

/// One extent in guest order.
#[derive(Clone)]
pub struct Extent {
    /// The descriptor line.
    pub line: ExtentLine,
    /// First guest byte.
    pub start: u64,
    /// Guest bytes.
    pub len: u64,
    /// Where the bytes are.
    pub data: ExtentData,
    /// The file name as QEMU reports it (joined to the descriptor's directory).
    pub path: String,
}

/// Where the descriptor lives, for CID updates.
#[derive(Debug, Clone, Copy)]
enum DescAt {
    /// Embedded at byte `off`, at most `len` bytes.
    Embedded { off: u64, len: u64 },
    /// The whole descriptor file.
    File,
    /// None (a sparse file without a descriptor).
    None,
}

/// An opened VMDK image.
pub struct VmdkDriver {
    storage: Arc<dyn Storage>,
    read_only: bool,
    size: u64,
    desc: Mutex<(Descriptor, Vec<u8>)>,
    desc_at: DescAt,
    extents: RwLock<Vec<Extent>>,
    backing: RwLock<Option<Arc<dyn BlockDriver>>>,
    cid_updated: AtomicBool,
    cid_checked: AtomicBool,
    closed: AtomicBool,
}

/// QEMU's `path_combine`: `name` relative to the directory of `base`.
pub fn path_combine(base: &str, name: &str) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    match base.rfind('/') {
        Some(i) => format!("{}{}", &base[..=i], name),
        None => name.to_string(),
    }
}

const CREATE_TYPES: &[&str] = &[
    "monolithicFlat",
    "vmfs",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "monolithicSparse",
    "streamOptimized",
];

impl VmdkDriver {
    /// Open `storage` (a sparse extent with its embedded descriptor, or a descriptor file).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let name = storage.name().to_string();
        let read_only = opts.read_only || storage.read_only();
        let size = storage.size()?;
        let mut head = vec![0u8; size.min(512) as usize];
        storage.read_at(&mut head, 0)?;
        if head.len() >= 4
            && (u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == MAGIC
                || head[..4] == *b"COWD")
        {
            return Self::open_sparse(storage, read_only, name);
        }
        if size > MAX_DESCRIPTOR {
            return Err(Error::new(
                ErrorCode::WrongFormat,
                "Image not in VMDK format (descriptor file too large)",
            )
            .with_path(name));
        }
        let mut raw = vec![0u8; size as usize];
        storage.read_at(&mut raw, 0)?;
        if !raw.starts_with(b"# Disk DescriptorFile") {
            return Err(
                Error::new(ErrorCode::WrongFormat, "Image not in VMDK format").with_path(name),
            );
        }
        let desc = Descriptor::parse(&raw).map_err(|e| e.with_path(&name))?;
        if !CREATE_TYPES.contains(&desc.create_type.as_str()) {
            return Err(Error::unsupported(format!(
                "Unsupported image type '{}'",
                desc.create_type
            ))
            .with_path(name));
        }
        if desc.extents.is_empty() {
            return Err(Error::corrupt("VMDK descriptor has no extents").with_path(name));
        }
        let mut extents = Vec::new();
        let mut start = 0u64;
        for line in &desc.extents {
            let data = match line.kind {
                ExtentType::Flat | ExtentType::Vmfs => ExtentData::Flat {
                    offset: line.offset * SECTOR,
                    storage: None,
                },
                ExtentType::Zero => ExtentData::Zero,
                ExtentType::Sparse => ExtentData::Sparse(None),
                k => {
                    return Err(Error::unsupported(format!(
                        "Unsupported extent type '{}'",
                        k.name()
                    ))
                    .with_path(name))
                }
            };
            let len = line
                .sectors
                .checked_mul(SECTOR)
                .filter(|&l| {
                    start
                        .checked_add(l)
                        .is_some_and(|e| e <= super::header::MAX_CAPACITY_SECTORS * SECTOR)
                })
                .ok_or_else(|| Error::corrupt("VMDK extents are too large").with_path(&name))?;
            extents.push(Extent {
                line: line.clone(),
                start,
                len,
                data,
                path: path_combine(&name, &line.file),
            });
            start += len;
        }
        Ok(VmdkDriver {
            storage,
            read_only,
            size: start,
            desc: Mutex::new((desc, raw)),
            desc_at: DescAt::File,
            extents: RwLock::new(extents),
            backing: RwLock::new(None),
            cid_updated: AtomicBool::new(false),
            cid_checked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    fn open_sparse(storage: Arc<dyn Storage>, read_only: bool, name: String) -> Result<Self> {
        let ext = SparseExtent::open(storage.clone(), read_only).map_err(|e| e.with_path(&name))?;
        let h: &SparseHeader = &ext.h;
        let (desc, raw, desc_at) = if h.desc_offset != 0 && h.desc_size != 0 {
            let off = h
                .desc_offset
                .checked_mul(SECTOR)
                .ok_or_else(|| Error::corrupt("Invalid descriptor offset"))?;
            let len = h.desc_size * SECTOR;
            if off
                .checked_add(len)
                .is_none_or(|e| e > storage.size().unwrap_or(0))
            {
                return Err(
                    Error::corrupt("Embedded descriptor is beyond the end of the image")
                        .with_path(name),
                );
            }
            let mut raw = vec![0u8; len as usize];
            storage.read_at(&mut raw, off)?;
            let d = Descriptor::parse(&raw).map_err(|e| e.with_path(&name))?;
            (d, raw, DescAt::Embedded { off, len })
        } else {
            let d = Descriptor {
                cid: random_cid(),
                parent_cid: u32::MAX,
                create_type: "monolithicSparse".into(),
                ..Default::default()
            };
            (d, Vec::new(), DescAt::None)
        };
        let len = ext.capacity();
        let line = ExtentLine {
            access: "RW".into(),
            sectors: h.capacity,
            kind: ExtentType::Sparse,
            file: name.clone(),
            offset: 0,
        };
        let extents = vec![Extent {
            line,
            start: 0,
            len,
            data: ExtentData::Sparse(Some(Arc::new(ext))),
            path: name,
        }];
        Ok(VmdkDriver {
            storage,
            read_only,
            size: len,
            desc: Mutex::new((desc, raw)),
            desc_at,
            extents: RwLock::new(extents),
            backing: RwLock::new(None),
            cid_updated: AtomicBool::new(false),
            cid_checked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// Extent file names as written in the descriptor, in order, for the files still to attach
    /// (empty for a monolithic sparse file).
    pub fn extent_files(&self) -> Vec<String> {
        self.extents
            .read()
            .map(|x| {
                x.iter()
                    .filter(|e| {
                        matches!(
                            e.data,
                            ExtentData::Flat { storage: None, .. } | ExtentData::Sparse(None)
                        )
                    })
                    .map(|e| e.line.file.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Attach the extent files named by [`Self::extent_files`], in the same order.
    pub fn attach_extents(&self, files: Vec<Arc<dyn Storage>>) -> Result<()> {
        let mut ex = self
            .extents
            .write()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))?;
        let mut it = files.into_iter();
        for e in ex.iter_mut() {
            match &mut e.data {
                ExtentData::Flat { storage, .. } if storage.is_none() => {
                    *storage = Some(
                        it.next()
                            .ok_or_else(|| Error::invalid("too few VMDK extent files"))?,
                    );
                }
                ExtentData::Sparse(s) if s.is_none() => {
                    let f = it
                        .next()
                        .ok_or_else(|| Error::invalid("too few VMDK extent files"))?;
                    let fname = f.name().to_string();
                    let x =
                        SparseExtent::open(f, self.read_only).map_err(|e| e.with_path(&fname))?;
                    if x.h.compressed() && !x.h.markers() && !self.read_only {
                        return Err(Error::unsupported(
                            "compressed VMDK extent without markers is read-only",
                        ));
                    }
                    if x.capacity() < e.len {
                        return Err(Error::corrupt(format!(
                            "VMDK extent '{fname}' holds {} bytes, the descriptor says {}",
                            x.capacity(),
                            e.len
                        )));
                    }
                    *s = Some(Arc::new(x));
                }
                _ => {}
            }
        }
        if it.next().is_some() {
            return Err(Error::invalid("too many VMDK extent files"));
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::invalid("the image is closed").with_path(self.storage.name()));
        }
        Ok(())
    }

    fn bounds(&self, offset: u64, len: u64) -> Result<()> {
        self.check_open()?;
        crate::guard::in_range(offset, len, self.size, self.storage.name())
    }

    fn writable(&self) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())
    }

    /// The extents overlapping `[offset, offset+len)` with the overlapping range of each
    /// (extent-relative offset, buffer offset, length).
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<(Extent, u64, usize, usize)>> {
        let ex = self
            .extents
            .read()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))?;
        let mut out = Vec::new();
        let end = offset + len;
        let i0 = ex.partition_point(|e| e.start + e.len <= offset);
        for e in &ex[i0..] {
            if e.start >= end {
                break;
            }
            let s = e.start.max(offset);
            let t = (e.start + e.len).min(end);
            if t > s {
                out.push((
                    e.clone(),
                    s - e.start,
                    (s - offset) as usize,
                    (t - s) as usize,
                ));
            }
        }
        Ok(out)
    }

    /// QEMU's `vmdk_is_cid_valid`: a child reads through to its parent only while the parent's
    /// CID is the child's `parentCID` (writing to the parent changes its CID and cuts the link).
    fn check_parent_cid(&self, b: &dyn BlockDriver) -> Result<()> {
        if self.cid_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let parent_cid = self
            .desc
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))?
            .0
            .parent_cid;
        let cur = if b.format_name() == "vmdk" {
            b.info()?
                .format_specific
                .and_then(|v| v["data"]["cid"].as_u64())
        } else {
            None
        };
        if cur != Some(parent_cid as u64) {
            return Err(Error::corrupt(format!(
                "VMDK parent CID mismatch: the image expects parentCID={parent_cid:08x}, its parent has {}",
                cur.map_or("none (not a vmdk)".to_string(), |c| format!("CID={c:08x}"))
            ))
            .with_path(self.storage.name()));
        }
        self.cid_checked.store(true, Ordering::Release);
        Ok(())
    }

    /// Read the backing layer at guest `offset` (zeros past its end or without one).
    fn read_backing(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let b = self.backing.read().ok().and_then(|b| b.clone());
        match b {
            None => buf.fill(0),
            Some(b) => {
                self.check_parent_cid(b.as_ref())?;
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

    fn has_backing(&self) -> bool {
        self.backing.read().map(|b| b.is_some()).unwrap_or(false)
    }

    fn not_attached(&self, e: &Extent) -> Error {
        Error::invalid(format!("VMDK extent file '{}' is not opened", e.line.file))
            .with_path(self.storage.name())
    }

    /// QEMU's `vmdk_write_cid` on the first write: a new CID, so children see their parent changed.
    fn update_cid(&self) -> Result<()> {
        if self.cid_updated.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut g = self
            .desc
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))?;
        let cid = random_cid();
        let (desc, raw) = &mut *g;
        desc.cid = cid;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            if line.trim_start().starts_with("CID=") {
                out += &format!("CID={cid:08x}\n");
            } else {
                out += line;
            }
        }
        match self.desc_at {
            DescAt::Embedded { off, len } if out.len() as u64 <= len => {
                let mut b = out.into_bytes();
                b.resize(len as usize, 0);
                self.storage.write_at(&b, off)?;
                *raw = b;
            }
            DescAt::File => {
                let b = out.into_bytes();
                self.storage.write_at(&b, 0)?;
                self.storage.truncate(b.len() as u64)?;
                *raw = b;
            }
            _ => {}
        }
        Ok(())
    }

    fn write_impl(&self, offset: u64, buf: &[u8], level: Option<u32>) -> Result<()> {
        self.writable()?;
        self.bounds(offset, buf.len() as u64)?;
        self.update_cid()?;
        let hb = self.has_backing();
        for (e, eo, bo, n) in self.pieces(offset, buf.len() as u64)? {
            if e.line.access != "RW" {
                return Err(Error::new(
                    ErrorCode::ReadOnly,
                    format!("VMDK extent '{}' is read-only", e.line.file),
                ));
            }
            let src = &buf[bo..bo + n];
            match &e.data {
                ExtentData::Flat {
                    offset: fo,
                    storage: Some(s),
                } => s.write_at(src, fo + eo)?,
                ExtentData::Zero => {
                    return Err(Error::unsupported("cannot write to a ZERO extent"))
                }
                ExtentData::Sparse(Some(s)) => {
                    let start = e.start;
                    let fill = |o: u64, b: &mut [u8]| self.read_backing(start + o, b);
                    s.write(eo, src, &fill, hb, level)?
                }
                _ => return Err(self.not_attached(&e)),
            }
        }
        Ok(())
    }

    fn flush_all(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let hb = self.has_backing();
        let ex = self
            .extents
            .read()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))?
            .clone();
        for e in &ex {
            match &e.data {
                ExtentData::Sparse(Some(s)) => {
                    let start = e.start;
                    let fill = |o: u64, b: &mut [u8]| self.read_backing(start + o, b);
                    s.flush(&fill, hb)?
                }
                ExtentData::Flat {
                    storage: Some(s), ..
                } => s.flush()?,
                _ => {}
            }
        }
        self.storage.flush()
    }

    /// The extents (for `check` and `info`).
    pub fn extents(&self) -> Vec<Extent> {
        self.extents.read().map(|x| x.clone()).unwrap_or_default()
    }
}

impl BlockDriver for VmdkDriver {
    fn format_name(&self) -> &'static str {
        "vmdk"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        for (e, eo, bo, n) in self.pieces(offset, buf.len() as u64)? {
            let dst = &mut buf[bo..bo + n];
            match &e.data {
                ExtentData::Flat {
                    offset: fo,
                    storage: Some(s),
                } => s.read_at(dst, fo + eo)?,
                ExtentData::Zero => dst.fill(0),
                ExtentData::Sparse(Some(s)) => {
                    let start = e.start;
                    let fill = |o: u64, b: &mut [u8]| self.read_backing(start + o, b);
                    s.read(eo, dst, &fill)?
                }
                _ => return Err(self.not_attached(&e)),
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.write_impl(offset, buf, None)
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_unmap: bool) -> Result<()> {
        self.writable()?;
        self.bounds(offset, length)?;
        self.update_cid()?;
        let hb = self.has_backing();
        for (e, eo, _, n) in self.pieces(offset, length)? {
            match &e.data {
                ExtentData::Flat {
                    offset: fo,
                    storage: Some(s),
                } => s.write_zeroes(fo + eo, n as u64, false)?,
                ExtentData::Zero => {}
                ExtentData::Sparse(Some(s)) => {
                    let start = e.start;
                    let fill = |o: u64, b: &mut [u8]| self.read_backing(start + o, b);
                    s.write_zeroes(eo, n as u64, &fill, hb)?
                }
                _ => return Err(self.not_attached(&e)),
            }
        }
        Ok(())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        // VMDK cannot free a grain; a discarded range reads as zeros afterwards.
        self.write_zeroes(offset, length, true)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        self.bounds(offset, length)?;
        let mut out: Vec<LayerExtent> = Vec::new();
        let mut push = |start: u64, length: u64, status: LayerStatus| {
            if let Some(l) = out.last_mut() {
                let merge = match (l.status, status) {
                    (
                        LayerStatus::Data {
                            host_offset: Some(a),
                            compressed: false,
                            reads_zero: z1,
                        },
                        LayerStatus::Data {
                            host_offset: Some(b),
                            compressed: false,
                            reads_zero: z2,
                        },
                    ) => z1 == z2 && a + l.length == b,
                    (
                        LayerStatus::Data {
                            host_offset: None, ..
                        },
                        LayerStatus::Data {
                            host_offset: None, ..
                        },
                    ) => true,
                    (a, b) => a == b && !matches!(a, LayerStatus::Data { .. }),
                };
                if merge && l.start + l.length == start {
                    l.length += length;
                    return;
                }
            }
            out.push(LayerExtent {
                start,
                length,
                status,
            });
        };
        for (e, eo, bo, n) in self.pieces(offset, length)? {
            let g0 = offset + bo as u64;
            match &e.data {
                ExtentData::Flat {
                    offset: fo,
                    storage: Some(fs),
                } => {
                    // As QEMU: holes of the flat file read as zeros (DATA|ZERO).
                    let mut v = Vec::new();
                    crate::vdi::driver::split_host_holes(&**fs, g0, n as u64, fo + eo, &mut v)?;
                    for x in v {
                        push(x.start, x.length, x.status);
                    }
                }
                ExtentData::Zero => push(g0, n as u64, LayerStatus::Zero { host_offset: None }),
                ExtentData::Sparse(Some(s)) => {
                    let gb = s.h.grain_bytes();
                    let first = eo / gb;
                    let last = (eo + n as u64 - 1) / gb;
                    let grains = s.grains(first, last - first + 1)?;
                    let pending: Vec<u64> = s.lock()?.pending.keys().copied().collect();
                    let mut pos = 0u64;
                    for (k, gr) in grains.iter().enumerate() {
                        let at = eo + pos;
                        let inner = at % gb;
                        let m = (gb - inner).min(n as u64 - pos);
                        let st = match gr {
                            Grain::Unallocated if pending.contains(&(first + k as u64)) => {
                                LayerStatus::Data {
                                    host_offset: None,
                                    compressed: true,
                                    reads_zero: false,
                                }
                            }
                            Grain::Unallocated => LayerStatus::Unallocated,
                            Grain::Zero => LayerStatus::Zero { host_offset: None },
                            Grain::Data(h) => LayerStatus::Data {
                                host_offset: Some(h + inner),
                                compressed: false,
                                reads_zero: false,
                            },
                            Grain::Compressed(_) => LayerStatus::Data {
                                host_offset: None,
                                compressed: true,
                                reads_zero: false,
                            },
                        };
                        push(g0 + pos, m, st);
                        pos += m;
                    }
                }
                _ => return Err(self.not_attached(&e)),
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.flush_all()
    }

    fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = self.flush_all();
        self.closed.store(true, Ordering::Relaxed);
        r
    }

    fn info(&self) -> Result<DriverInfo> {
        let g = self
            .desc
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))?;
        let d = &g.0;
        let ex = self.extents();
        let monolithic = matches!(self.desc_at, DescAt::Embedded { .. } | DescAt::None);
        let list: Vec<serde_json::Value> = ex
            .iter()
            .map(|e| {
                let mut m = serde_json::Map::new();
                let sparse = match &e.data {
                    ExtentData::Sparse(Some(s)) => Some(s.clone()),
                    _ => None,
                };
                if let Some(s) = sparse.as_ref().filter(|s| s.h.compressed()) {
                    let _ = s;
                    m.insert("compressed".into(), true.into());
                }
                m.insert("virtual-size".into(), e.len.into());
                m.insert("filename".into(), e.path.clone().into());
                if let Some(s) = &sparse {
                    m.insert("cluster-size".into(), s.h.grain_bytes().into());
                }
                let fmt = if monolithic { "" } else { e.line.kind.name() };
                m.insert("format".into(), fmt.into());
                serde_json::Value::Object(m)
            })
            .collect();
        let fs = serde_json::json!({
            "type": "vmdk",
            "data": {
                "cid": d.cid,
                "parent-cid": d.parent_cid,
                "create-type": d.create_type,
                "extents": list,
            }
        });
        let cluster = ex.iter().find_map(|e| match &e.data {
            ExtentData::Sparse(Some(s)) => Some(s.h.grain_bytes()),
            _ => None,
        });
        Ok(DriverInfo {
            cluster_size: cluster,
            dirty: false,
            backing_file: d.parent_hint.clone(),
            backing_format: d.parent_hint.as_ref().map(|_| "vmdk".to_string()),
            format_specific: Some(fs),
        })
    }

    fn check(&self, _repair: RepairMode) -> Result<CheckReport> {
        super::check::check(self)
    }

    fn compressed_cluster_size(&self) -> Option<u64> {
        let ex = self.extents();
        let mut cs = None;
        for e in &ex {
            match &e.data {
                ExtentData::Sparse(Some(s)) if s.h.compressed() => cs = Some(s.h.grain_bytes()),
                _ => return None,
            }
        }
        cs
    }

    fn write_compressed(&self, offset: u64, data: &[u8], level: Option<u32>) -> Result<()> {
        self.write_impl(offset, data, level)
    }

    fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        self.backing.read().ok().and_then(|b| b.clone())
    }

    fn set_backing(&self, backing: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        self.cid_checked.store(false, Ordering::Release);
        *self
            .backing
            .write()
            .map_err(|_| Error::new(ErrorCode::Internal, "vmdk lock poisoned"))? = backing;
        Ok(())
    }

    fn extent_files(&self) -> Vec<String> {
        VmdkDriver::extent_files(self)
    }

    fn attach_extents(&self, files: Vec<Arc<dyn Storage>>) -> Result<()> {
        VmdkDriver::attach_extents(self, files)
    }
}
