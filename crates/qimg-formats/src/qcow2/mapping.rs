//! Guest → host mapping: L1 and L2 entries and the L2 table cache.
//!
//! On-disk layout (QEMU docs/interop/qcow2.txt):
//! ```text
//! L1 table entry (u64, big-endian):
//!   bits 0-8    reserved (0)
//!   bits 9-55   offset of an L2 table (0 = unallocated)
//!   bit  63     COPIED: the L2 table's refcount is exactly 1
//! standard L2 table entry (u64, big-endian):
//!   bit  0      reads as zeros (version 3)
//!   bits 1-8    reserved (0)
//!   bits 9-55   host cluster offset (0 = unallocated, or "zero" without preallocation)
//!   bit  62     0 (1 = compressed cluster descriptor, a different layout)
//!   bit  63     COPIED: refcount is exactly 1, so the cluster may be written in place
//! extended L2 table entry (incompatible bit 4; 128 bits: the standard entry, then a bitmap):
//!   bits 0-63   standard entry as above, but bit 0 (zero) is reserved and must be 0
//!   bits 64-95  subcluster i (of 32) is allocated: its data is at host + i * cluster_size / 32
//!   bits 96-127 subcluster i reads as zeros (never together with its allocation bit)
//! ```
use qimg_core::{Error, Result, Storage};
use std::collections::HashMap;

/// L2/L1 entry bit: refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// L2 entry bit: compressed cluster descriptor.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 entry bit: reads as zeros.
pub const ZERO: u64 = 1;
/// Host offset field of L1 and standard L2 entries.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// What an L2 entry says about its guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Not allocated here: the backing file (or zeros) shows through.
    Unallocated,
    /// Reads as zeros; `Some(host)` keeps preallocated space.
    Zero(Option<u64>),
    /// Data at `host`; `copied` means it may be written in place.
    Data {
        /// Host offset.
        host: u64,
        /// COPIED flag.
        copied: bool,
    },
    /// A compressed cluster: the raw L2 entry (see `compress::locate`).
    Compressed(u64),
    /// Extended L2 only: subclusters in different states (allocated at `host + i * sc`, zero, or
    /// unallocated). Clusters whose 32 subclusters agree decode to the variants above.
    Mixed {
        /// Host offset of the cluster, if one is allocated.
        host: Option<u64>,
        /// Allocation bits, subcluster 0 in bit 0.
        alloc: u32,
        /// Zero bits.
        zero: u32,
        /// COPIED flag.
        copied: bool,
    },
}

/// One subcluster's state within a [`Cluster::Mixed`] (or any cluster, for uniformity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// Data at this host offset.
    Data(u64),
    /// Reads as zeros; the host offset of its space when the cluster has one (QEMU's map
    /// reports it).
    Zero(Option<u64>),
    /// The backing file (or zeros) shows through.
    Unallocated,
}

impl Cluster {
    /// State of subcluster `i` of a mixed cluster with subclusters of `sc` bytes.
    pub fn sub(&self, i: u32, sc: u64) -> Sub {
        match *self {
            Cluster::Mixed {
                host, alloc, zero, ..
            } => match host {
                Some(h) if alloc & (1 << i) != 0 => Sub::Data(h + i as u64 * sc),
                h if zero & (1 << i) != 0 => Sub::Zero(h.map(|h| h + i as u64 * sc)),
                _ => Sub::Unallocated,
            },
            Cluster::Data { host, .. } => Sub::Data(host + i as u64 * sc),
            Cluster::Zero(h) => Sub::Zero(h.map(|h| h + i as u64 * sc)),
            _ => Sub::Unallocated,
        }
    }
}

/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;

/// Decode an extended L2 entry (standard entry and subcluster bitmap), with QEMU's validity
/// rules: no zero flag, no bitmap on compressed clusters, no subcluster both allocated and zero,
/// no allocated subcluster without a host cluster.
pub fn decode_l2_ext(
    entry: u64,
    bitmap: u64,
    cluster_bits: u32,
    data_file: bool,
) -> Result<Cluster> {
    let bad = |why: &str| {
        Err(Error::corrupt(format!(
            "Invalid extended L2 entry {entry:#x} bitmap {bitmap:#x}: {why}"
        )))
    };
    if entry & COMPRESSED != 0 {
        if bitmap != 0 {
            return bad("compressed cluster with a subcluster bitmap");
        }
        return Ok(Cluster::Compressed(entry));
    }
    if entry & ZERO != 0 {
        return bad("the zero flag is reserved with extended L2 entries");
    }
    let (alloc, zero) = (bitmap as u32, (bitmap >> 32) as u32);
    if alloc & zero != 0 {
        return bad("a subcluster is both allocated and zero");
    }
    let host = match decode_l2_in(entry & !ZERO, cluster_bits, data_file)? {
        Cluster::Data { host, .. } => Some(host),
        _ => None,
    };
    if host.is_none() && alloc != 0 {
        return bad("allocated subclusters without a host cluster");
    }
    let copied = entry & COPIED != 0;
    Ok(match (alloc, zero, host) {
        (u32::MAX, _, Some(host)) => Cluster::Data { host, copied },
        (0, u32::MAX, h) => Cluster::Zero(h),
        (0, 0, None) => Cluster::Unallocated,
        _ => Cluster::Mixed {
            host,
            alloc,
            zero,
            copied,
        },
    })
}

/// The extended L2 pair (entry, bitmap) for a standard L2 entry: data clusters get every
/// allocation bit, zero clusters every zero bit (the standard zero flag is dropped).
pub fn encode_l2_ext(entry: u64) -> (u64, u64) {
    if entry & COMPRESSED != 0 || entry == 0 {
        return (entry, 0);
    }
    if entry & ZERO != 0 {
        return (entry & !ZERO, (u32::MAX as u64) << 32);
    }
    (entry, u32::MAX as u64)
}

/// Decode a standard L2 entry.
pub fn decode_l2(entry: u64, cluster_bits: u32) -> Result<Cluster> {
    decode_l2_in(entry, cluster_bits, false)
}

/// Decode a standard L2 entry of an image with an external data file when `data_file`: there,
/// host offset 0 is a real cluster, told apart from "unallocated" by the COPIED flag (data file
/// clusters always have it), as QEMU does.
pub fn decode_l2_in(entry: u64, cluster_bits: u32, data_file: bool) -> Result<Cluster> {
    if data_file && entry & COMPRESSED == 0 && entry & OFFSET_MASK == 0 && entry & COPIED != 0 {
        return Ok(if entry & ZERO != 0 {
            Cluster::Zero(Some(0))
        } else {
            Cluster::Data {
                host: 0,
                copied: true,
            }
        });
    }
    if entry & COMPRESSED != 0 {
        return Ok(Cluster::Compressed(entry));
    }
    let host = entry & OFFSET_MASK;
    if host & ((1 << cluster_bits) - 1) != 0 {
        return Err(Error::corrupt(format!(
            "Cluster allocation offset {host:#x} unaligned (L2 entry {entry:#x})"
        ))
        .with_offset(host));
    }
    if entry & ZERO != 0 {
        return Ok(Cluster::Zero(if host == 0 { None } else { Some(host) }));
    }
    if host == 0 {
        return Ok(Cluster::Unallocated);
    }
    Ok(Cluster::Data {
        host,
        copied: entry & COPIED != 0,
    })
}

/// Decode an L1 entry into an L2 table offset (0 = none).
pub fn decode_l1(entry: u64, cluster_bits: u32) -> Result<u64> {
    let off = entry & OFFSET_MASK;
    if off & ((1 << cluster_bits) - 1) != 0 {
        return Err(Error::corrupt(format!(
            "L2 table offset {off:#x} unaligned (L1 entry {entry:#x})"
        ))
        .with_offset(off));
    }
    Ok(off)
}

/// One cached L2 table.
pub struct L2Table {
    /// Entries, decoded to native integers.
    pub entries: Vec<u64>,
    /// Needs writing.
    pub dirty: bool,
    last_used: u64,
}

/// A bounded write-back cache of L2 tables keyed by host offset.
pub struct L2Cache {
    tables: HashMap<u64, L2Table>,
    capacity: usize,
    clock: u64,
}

impl L2Cache {
    /// A cache holding at most `capacity` tables.
    pub fn new(capacity: usize) -> Self {
        L2Cache {
            tables: HashMap::new(),
            capacity: capacity.max(4),
            clock: 0,
        }
    }

    /// The table at host offset `off`, read from `storage` if not cached.
    pub fn get(
        &mut self,
        storage: &dyn Storage,
        off: u64,
        cluster_size: u64,
    ) -> Result<&mut L2Table> {
        self.clock += 1;
        let clock = self.clock;
        if self.tables.len() >= self.capacity && !self.tables.contains_key(&off) {
            self.evict_clean();
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.tables.entry(off) {
            let mut raw = vec![0u8; cluster_size as usize];
            storage.read_at(&mut raw, off)?;
            let entries = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            e.insert(L2Table {
                entries,
                dirty: false,
                last_used: clock,
            });
        }
        let t = self
            .tables
            .get_mut(&off)
            .ok_or_else(|| Error::corrupt("L2 cache miss"))?;
        t.last_used = clock;
        Ok(t)
    }

    /// Insert a new, all-zero, dirty table.
    pub fn insert_new(&mut self, off: u64, entries: usize) {
        self.clock += 1;
        self.tables.insert(
            off,
            L2Table {
                entries: vec![0; entries],
                dirty: true,
                last_used: self.clock,
            },
        );
    }

    /// True if more tables are cached than the capacity.
    pub fn over_capacity(&self) -> bool {
        self.tables.len() > self.capacity
    }

    /// True if any table needs writing.
    pub fn is_dirty(&self) -> bool {
        self.tables.values().any(|t| t.dirty)
    }

    /// Write every dirty table (no flush).
    pub fn write_back(&mut self, storage: &dyn Storage) -> Result<()> {
        let mut dirty: Vec<_> = self.tables.iter_mut().filter(|(_, t)| t.dirty).collect();
        dirty.sort_by_key(|(off, _)| **off);
        for (off, t) in dirty {
            let mut raw = Vec::with_capacity(t.entries.len() * 8);
            for e in &t.entries {
                raw.extend_from_slice(&e.to_be_bytes());
            }
            storage.write_at(&raw, *off)?;
            t.dirty = false;
        }
        Ok(())
    }

    /// Drop clean tables, least recently used first, down to three quarters of the capacity
    /// (in batches, so a scan does not sort the cache on every miss).
    pub fn evict_clean(&mut self) {
        let keep = self.capacity * 3 / 4;
        if self.tables.len() <= keep {
            return;
        }
        let mut clean: Vec<(u64, u64)> = self
            .tables
            .iter()
            .filter(|(_, t)| !t.dirty)
            .map(|(o, t)| (t.last_used, *o))
            .collect();
        clean.sort_unstable();
        let excess = self.tables.len() - keep;
        for (_, off) in clean.into_iter().take(excess) {
            self.tables.remove(&off);
        }
    }

    /// Forget a table (after its cluster was freed).
    pub fn remove(&mut self, off: u64) {
        self.tables.remove(&off);
    }
}
