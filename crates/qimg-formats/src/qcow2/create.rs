//! Creating a qcow2 image: header (with extensions and backing name), refcount table and first
//! refcount block, L1 table, then optional preallocation through the driver.
use super::alloc::Refcounts;
use super::driver::Qcow2Driver;
use super::header::{self, push_extension, Header, FEATURE_TABLE};
use super::mapping::COPIED;
use crate::options::{CreateOptions, OpenOptions, Preallocation};
use qimg_core::{BlockDriver, Error, Result, Storage};
use std::sync::Arc;

/// Validate options as qemu-img does and write a new, empty qcow2 image into `storage`.
pub fn create(storage: Arc<dyn Storage>, o: &CreateOptions) -> Result<()> {
    let v3 = match o.compat.as_deref() {
        None | Some("1.1") | Some("v3") => true,
        Some("0.10") | Some("v2") => false,
        Some(c) => {
            return Err(Error::invalid(format!(
                "Invalid compatibility level: '{c}'"
            )))
        }
    };
    let cs = o.cluster_size.unwrap_or(65536);
    if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
        return Err(Error::invalid(
            "Cluster size must be a power of two between 512 and 2048k",
        ));
    }
    let bits = o.refcount_bits.unwrap_or(16);
    if !bits.is_power_of_two() || bits > 64 {
        return Err(Error::invalid(
            "Refcount width must be a power of two and may not exceed 64 bits",
        ));
    }
    if !v3 && bits != 16 {
        return Err(Error::invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"));
    }
    if !v3 && o.lazy_refcounts {
        return Err(Error::invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"));
    }
    if o.extended_l2 && !v3 {
        return Err(Error::invalid("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)"));
    }
    if o.extended_l2 && cs < 16384 {
        return Err(Error::invalid(
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
        ));
    }
    if o.data_file_raw && o.data_file.is_none() {
        return Err(Error::invalid("data-file-raw requires data-file"));
    }
    if let Some(d) = &o.data_file {
        if !v3 {
            return Err(Error::invalid("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)"));
        }
        if d.is_empty() || d.len() > 1023 || d.contains('\0') {
            return Err(Error::invalid("Data file name must be 1 to 1023 bytes"));
        }
        if o.preallocation != Preallocation::Off {
            return Err(Error::unsupported(
                "preallocation with an external data file is not supported yet",
            ));
        }
        if o.backing_file.is_some() && o.data_file_raw {
            return Err(Error::invalid(
                "Backing file and data-file-raw cannot be used at the same time",
            ));
        }
    }
    let compression = match o.compression_type.as_deref() {
        None | Some("zlib") => super::compress::ZLIB,
        Some("zstd") if v3 => super::compress::ZSTD,
        Some("zstd") => {
            return Err(Error::invalid(
                "Compression type 'zstd' requires compatibility level 1.1 or above (use compat=1.1 or greater)",
            ))
        }
        Some(c) => {
            return Err(Error::invalid(format!(
                "Parameter 'compression_type' does not accept value '{c}'"
            )))
        }
    };
    if o.backing_fmt.is_some() && o.backing_file.is_none() {
        return Err(Error::invalid(
            "Backing format cannot be used without backing file",
        ));
    }
    if o.preallocation != Preallocation::Off && o.backing_file.is_some() && !o.extended_l2 {
        return Err(Error::invalid(
            "Backing file and preallocation can only be used at the same time if extended_l2 is on",
        ));
    }
    let cluster_bits = cs.trailing_zeros();
    let l2_entry_bytes = if o.extended_l2 { 16 } else { 8 };
    let l1_size = o.size.div_ceil(cs * (cs / l2_entry_bytes));
    if l1_size * 8 > header::MAX_L1_BYTES {
        return Err(Error::invalid(
            "The image size is too large for file format 'qcow2' (try using a larger cluster size)",
        ));
    }
    let mut h = Header {
        version: if v3 { 3 } else { 2 },
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size: o.size,
        crypt_method: super::crypto::create_method(o)?,
        l1_size: l1_size as u32,
        l1_table_offset: 0,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible: (if compression == super::compress::ZSTD {
            header::INCOMPAT_COMPRESSION
        } else {
            0
        }) | if o.extended_l2 {
            header::INCOMPAT_EXTL2
        } else {
            0
        } | if o.data_file.is_some() {
            header::INCOMPAT_DATA_FILE
        } else {
            0
        },
        compatible: if o.lazy_refcounts {
            header::COMPAT_LAZY_REFCOUNTS
        } else {
            0
        },
        autoclear: if o.data_file_raw {
            header::AUTOCLEAR_DATA_FILE_RAW
        } else {
            0
        },
        refcount_order: bits.trailing_zeros(),
        header_length: if v3 { 112 } else { 72 },
        compression_type: compression,
        backing_file: o.backing_file.clone(),
        backing_format: o.backing_fmt.clone(),
        feature_names: Vec::new(),
        bitmaps_ext: None,
        data_file: o.data_file.clone(),
        crypto_header: None,
    };
    storage.truncate(0)?;
    // Refcount table at cluster 1, first block at cluster 2 counting clusters 0..=2.
    let mut table = vec![0u8; cs as usize];
    table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
    storage.write_at(&table, cs)?;
    let mut rc = Refcounts::load(
        storage.as_ref(),
        cs,
        1,
        cluster_bits,
        h.refcount_order,
        3 * cs,
    )?;
    storage.write_at(&vec![0u8; cs as usize], 2 * cs)?;
    for c in 0..3 {
        rc.set(storage.as_ref(), c, 1)?;
    }
    if l1_size > 0 {
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        h.l1_table_offset = rc.allocate(storage.as_ref(), l1_clusters)?;
        // As QEMU: only the table's own bytes are written, so a new image ends right after
        // the L1 entries (196 624 bytes for a 1 GiB image with 64 KiB clusters), not at a
        // cluster boundary; the rest of the L1 cluster is allocated in the refcounts.
        storage.write_at(&vec![0u8; (l1_size * 8) as usize], h.l1_table_offset)?;
    } else {
        h.l1_table_offset = 3 * cs;
    }
    // LUKS: the embedded header's clusters right after the L1 table, as QEMU places them.
    let luks_area = if h.crypt_method == header::CRYPT_LUKS {
        let p = super::luks::params(&o.encryption)?;
        let len = super::luks::area_len(&p);
        let off = rc.allocate(storage.as_ref(), len.div_ceil(cs))?;
        let key = o
            .encryption
            .key
            .as_ref()
            .map(|k| k.as_bytes())
            .unwrap_or_default();
        super::luks::create(&storage, off, len, &p, key)?;
        let end = off + len.div_ceil(cs) * cs;
        if storage.size()? < end {
            storage.truncate(end)?;
        }
        Some((off, len))
    } else {
        None
    };
    rc.write_back(storage.as_ref())?;
    if let Some((off, clusters)) = rc.table_moved.take() {
        h.refcount_table_offset = off;
        h.refcount_table_clusters = clusters;
    }
    if rc.has_pending_frees() {
        rc.apply_frees(storage.as_ref())?;
        rc.write_back(storage.as_ref())?;
    }
    let mut first = h.encode_fixed();
    if let Some(f) = &o.backing_fmt {
        push_extension(&mut first, header::EXT_BACKING_FORMAT, f.as_bytes());
    }
    if let Some(d) = &o.data_file {
        push_extension(&mut first, header::EXT_DATA_FILE, d.as_bytes());
    }
    if let Some((off, len)) = luks_area {
        let mut ext = off.to_be_bytes().to_vec();
        ext.extend_from_slice(&len.to_be_bytes());
        push_extension(&mut first, header::EXT_CRYPTO, &ext);
    }
    let mut table_ext = Vec::new();
    for (ty, bit, name) in FEATURE_TABLE {
        let mut e = vec![*ty, *bit];
        let mut n = name.as_bytes().to_vec();
        n.resize(46, 0);
        e.extend_from_slice(&n);
        table_ext.extend_from_slice(&e);
    }
    let name_len = o.backing_file.as_ref().map_or(0, |b| b.len());
    // As QEMU: the feature name table is optional and left out when the header cluster is
    // too small for it (512-byte clusters with a backing file).
    if (first.len() + 8 + table_ext.len() + 8 + name_len) as u64 <= cs {
        push_extension(&mut first, header::EXT_FEATURE_TABLE, &table_ext);
    }
    first.extend_from_slice(&[0u8; 8]);
    if let Some(b) = &o.backing_file {
        if b.len() > header::MAX_BACKING_NAME as usize {
            return Err(Error::invalid("Backing file name too long"));
        }
        let off = first.len() as u64;
        first.extend_from_slice(b.as_bytes());
        first[8..16].copy_from_slice(&off.to_be_bytes());
        first[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
    }
    if first.len() as u64 > cs {
        return Err(Error::invalid(
            "Header extensions and backing file name do not fit in one cluster",
        ));
    }
    storage.write_at(&first, 0)?;
    storage.flush()?;
    if o.preallocation != Preallocation::Off {
        preallocate(storage, o.preallocation, o.size)?;
    } else if o.data_file_raw {
        map_identity(storage, o.size)?;
    }
    Ok(())
}

/// `data_file_raw=on`: map every guest cluster to the same offset of the data file, as QEMU
/// does at creation, so the data file is the guest disk byte for byte.
fn map_identity(storage: Arc<dyn Storage>, size: u64) -> Result<()> {
    let drv = Qcow2Driver::open(
        storage,
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )?;
    let cs = drv.cs;
    {
        let mut st = drv.lock()?;
        for gc in 0..size.div_ceil(cs) {
            drv.set_l2_pub(&mut st, gc, (gc * cs) | COPIED)?;
        }
        drv.flush_locked(&mut st)?;
    }
    drv.close()
}

/// Allocate every guest cluster (and its L2 table), then make the data area as asked.
fn preallocate(storage: Arc<dyn Storage>, mode: Preallocation, size: u64) -> Result<()> {
    let drv = Qcow2Driver::open(
        storage.clone(),
        &OpenOptions {
            read_only: false,
            ..Default::default()
        },
    )?;
    let cs = drv.cs;
    let clusters = size.div_ceil(cs);
    let per_l2 = drv.l2_entries();
    let mut ranges = Vec::new();
    {
        let mut st = drv.lock()?;
        let mut gc = 0;
        while gc < clusters {
            let n = (per_l2 - gc % per_l2)
                .min(clusters - gc)
                .min(st.rc.max_run());
            drv.prealloc_run(&mut st, gc, n)?;
            let host = drv.host_of(&mut st, gc)?;
            ranges.push((host, n * cs));
            gc += n;
        }
        drv.flush_locked(&mut st)?;
    }
    for (host, len) in &ranges {
        match mode {
            Preallocation::Metadata => {
                if storage.size()? < host + len {
                    storage.truncate(host + len)?;
                }
            }
            Preallocation::Falloc => storage.allocate(*host, *len)?,
            _ => {
                storage.allocate(*host, *len)?;
                let z = vec![0u8; (1 << 20).min(*len as usize)];
                let mut p = 0;
                while p < *len {
                    let k = (z.len() as u64).min(len - p);
                    storage.write_at(&z[..k as usize], host + p)?;
                    p += k;
                }
            }
        }
    }
    drv.close()
}

impl Qcow2Driver {
    /// Allocate `n` guest clusters from `gc` (all in one L2 table) as one host run.
    fn prealloc_run(&self, st: &mut super::driver::State, gc: u64, n: u64) -> Result<()> {
        let host = self.alloc_for_prealloc(st, gc, n)?;
        for k in 0..n {
            self.set_l2_pub(st, gc + k, (host + k * self.cs) | COPIED)?;
        }
        Ok(())
    }
}
