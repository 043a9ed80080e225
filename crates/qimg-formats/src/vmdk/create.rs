//! Creating VMDK images as `qemu-img create -f vmdk` does (checked against qemu-img 10), for
//! every subformat: monolithicSparse (descriptor embedded), monolithicFlat (descriptor +
//! `NAME-flat.vmdk`), twoGbMaxExtentSparse / twoGbMaxExtentFlat (descriptor + 2 GiB extents
//! `NAME-s001.vmdk` / `NAME-f001.vmdk`), and streamOptimized — which, unlike QEMU, is written in
//! VMware's layout: directory in the footer (`gdOffset = ~0`), tables and directory behind
//! markers at the end of the stream, then footer and end-of-stream markers.
//!
//! Sparse extent layout (QEMU's): header at sector 0, descriptor area at sectors 1–20, redundant
//! directory and its tables, directory and its tables, grains from the next 64 KiB boundary.
use super::descriptor::{random_cid, Descriptor, ExtentLine, ExtentType};
use super::driver::{path_combine, VmdkDriver};
use super::header::*;
use crate::options::CreateOptions;
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::lock::LockMode;
use qimg_core::{BlockDriver, Error, Result, Storage};
use std::sync::Arc;

/// Grain size of created images (sectors).
const GRAIN: u64 = 128;
/// Descriptor area of created sparse extents (sectors).
const DESC_SECTORS: u64 = 20;
/// Extent size of the twoGbMaxExtent subformats.
const SPLIT: u64 = 2 << 30;

/// The subformats.
const SUBFORMATS: &[&str] = &[
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
];

/// The header of a new sparse extent of `sectors` (QEMU's `vmdk_init_extent`).
pub fn sparse_header(
    sectors: u64,
    compress: bool,
    zeroed: bool,
    vmware_stream: bool,
) -> SparseHeader {
    let grains = sectors.div_ceil(GRAIN);
    let gt_size = (GTES_PER_GT as u64 * 4).div_ceil(SECTOR);
    let gt_count = grains.div_ceil(GTES_PER_GT as u64);
    let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
    let rgd = 1 + DESC_SECTORS;
    let gd = rgd + gd_sectors + gt_size * gt_count;
    let overhead = (gd + gd_sectors + gt_size * gt_count).next_multiple_of(GRAIN);
    let mut flags = FLAG_NL_DETECT | FLAG_RGD;
    if compress {
        flags |= FLAG_COMPRESS | FLAG_MARKER;
    }
    if zeroed {
        flags |= FLAG_ZERO_GRAIN;
    }
    let mut h = SparseHeader {
        version: if compress {
            3
        } else if zeroed {
            2
        } else {
            1
        },
        flags,
        capacity: sectors,
        grain_size: GRAIN,
        desc_offset: 1,
        desc_size: DESC_SECTORS,
        gtes_per_gt: GTES_PER_GT,
        rgd_offset: rgd,
        gd_offset: gd,
        overhead,
        unclean: 0,
        compress_algorithm: u16::from(compress),
    };
    if vmware_stream {
        h.flags &= !FLAG_RGD;
        h.rgd_offset = 0;
        h.gd_offset = GD_AT_END;
        h.overhead = GRAIN;
    }
    h
}

/// Write a new sparse extent into `s`; `desc` is embedded when given.
fn write_sparse(s: &dyn Storage, h: &SparseHeader, desc: Option<&str>) -> Result<()> {
    if s.size()? != 0 {
        s.truncate(0)?;
    }
    let mut head = vec![0u8; (h.overhead * SECTOR) as usize];
    head[..512].copy_from_slice(&h.encode());
    if let Some(d) = desc {
        if d.len() as u64 > DESC_SECTORS * SECTOR {
            return Err(Error::invalid("VMDK descriptor is too long"));
        }
        head[512..512 + d.len()].copy_from_slice(d.as_bytes());
    }
    let gt_size = (GTES_PER_GT as u64 * 4).div_ceil(SECTOR);
    let gt_count = h.gd_entries();
    let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
    if h.gd_offset != GD_AT_END {
        for (dir, tables) in [
            (h.rgd_offset, h.rgd_offset + gd_sectors),
            (h.gd_offset, h.gd_offset + gd_sectors),
        ] {
            for i in 0..gt_count {
                let at = (dir * SECTOR + i * 4) as usize;
                head[at..at + 4].copy_from_slice(&((tables + i * gt_size) as u32).to_le_bytes());
            }
        }
        s.write_at(&head, 0)?;
        return Ok(());
    }
    // VMware stream: header, descriptor, then an empty directory and the footer.
    let mut tail = Marker::metadata(MARKER_GD, gd_sectors).to_vec();
    let gd_at = h.overhead + 1;
    tail.resize((512 + gd_sectors * SECTOR) as usize, 0);
    tail.extend_from_slice(&Marker::metadata(MARKER_FOOTER, 1));
    let mut f = h.clone();
    f.gd_offset = gd_at;
    tail.extend_from_slice(&f.encode());
    tail.extend_from_slice(&[0u8; 512]);
    head.extend_from_slice(&tail);
    s.write_at(&head, 0)
}

fn create_file(path: &str) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(FileStorage::open(
        path,
        &FileOptions {
            read_only: false,
            create: true,
            locking: LockMode::Auto,
            force_share: false,
            ..Default::default()
        },
    )?))
}

/// Write a new VMDK image of `opts.size` bytes into `storage` (and its extent files next to it).
pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<()> {
    let sub = opts.subformat.as_deref().unwrap_or("monolithicSparse");
    if !SUBFORMATS.contains(&sub) {
        return Err(Error::invalid(format!("Unknown subformat: {sub}")));
    }
    let adapter = opts.adapter_type.as_deref().unwrap_or("ide");
    if !["ide", "lsilogic", "buslogic", "legacyESX"].contains(&adapter) {
        return Err(Error::invalid(format!("Unknown adapter type: '{adapter}'")));
    }
    // QEMU's "undefined" means "not set".
    let hwversion = opts.hwversion.as_deref().filter(|h| *h != "undefined");
    if opts.compat6 && hwversion.is_some() {
        return Err(Error::invalid(
            "compat6 cannot be enabled with hwversion set",
        ));
    }
    let hw = match (hwversion, opts.compat6) {
        (Some(h), _) => h.to_string(),
        (None, true) => "6".into(),
        _ => "4".into(),
    };
    let size = opts.size;
    let sectors = size.div_ceil(SECTOR);
    if sectors > MAX_CAPACITY_SECTORS {
        return Err(Error::invalid("Image size is too large for VMDK"));
    }
    let name = storage.name().to_string();
    let mut parent_cid = u32::MAX;
    if let Some(b) = &opts.backing_file {
        if let Some(f) = opts.backing_fmt.as_deref().filter(|f| *f != "vmdk") {
            return Err(Error::invalid(format!(
                "Invalid backing file format: {f}. Must be vmdk."
            )));
        }
        let path = path_combine(&name, b);
        let bs: Arc<dyn Storage> = Arc::new(FileStorage::open(
            &path,
            &FileOptions {
                read_only: true,
                create: false,
                locking: LockMode::Off,
                force_share: true,
                ..Default::default()
            },
        )?);
        let d = VmdkDriver::open(
            bs,
            &crate::options::OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .map_err(|e| {
            Error::invalid(format!(
                "Invalid backing file format: {}. Must be vmdk.",
                e.message
            ))
        })?;
        let info = d.info()?;
        parent_cid = info
            .format_specific
            .as_ref()
            .and_then(|v| v["data"]["cid"].as_u64())
            .unwrap_or(u32::MAX as u64) as u32;
    }
    let heads: u64 = if adapter == "ide" { 16 } else { 255 };
    let mut desc = Descriptor {
        cid: random_cid(),
        parent_cid,
        create_type: sub.to_string(),
        parent_hint: opts.backing_file.clone(),
        extents: Vec::new(),
        ddb: vec![
            ("ddb.virtualHWVersion".into(), hw),
            (
                "ddb.geometry.cylinders".into(),
                (size / (63 * heads * SECTOR)).to_string(),
            ),
            ("ddb.geometry.heads".into(), heads.to_string()),
            ("ddb.geometry.sectors".into(), "63".into()),
            ("ddb.adapterType".into(), adapter.into()),
            (
                "ddb.toolsVersion".into(),
                opts.toolsversion
                    .clone()
                    .unwrap_or_else(|| "2147483647".into()),
            ),
        ],
    };
    let base = name.rsplit('/').next().unwrap_or(&name).to_string();
    let (stem, ext) = match base.rfind('.') {
        Some(i) if i > 0 => (base[..i].to_string(), base[i..].to_string()),
        _ => (base.clone(), String::new()),
    };
    let line = |sectors: u64, kind: ExtentType, file: String| ExtentLine {
        access: "RW".into(),
        sectors,
        kind,
        file,
        offset: 0,
    };
    match sub {
        "monolithicSparse" | "streamOptimized" => {
            let stream = sub == "streamOptimized";
            desc.extents
                .push(line(sectors, ExtentType::Sparse, base.clone()));
            let h = sparse_header(sectors, stream, opts.zeroed_grain, stream);
            write_sparse(&*storage, &h, Some(&desc.encode()))?;
        }
        _ => {
            let flat = sub.ends_with("Flat");
            let split = sub.starts_with("twoGb");
            let mut left = sectors;
            let mut k = 1;
            loop {
                let n = if split {
                    left.min(SPLIT / SECTOR)
                } else {
                    left
                };
                let file = match (flat, split) {
                    (true, false) => format!("{stem}-flat{ext}"),
                    (true, true) => format!("{stem}-f{k:03}{ext}"),
                    (false, _) => format!("{stem}-s{k:03}{ext}"),
                };
                let s = create_file(&path_combine(&name, &file))?;
                if flat {
                    s.truncate(0)?;
                    s.truncate(n * SECTOR)?;
                    desc.extents.push(line(n, ExtentType::Flat, file));
                } else {
                    write_sparse(
                        &*s,
                        &sparse_header(n, false, opts.zeroed_grain, false),
                        None,
                    )?;
                    desc.extents.push(line(n, ExtentType::Sparse, file));
                }
                s.flush()?;
                left -= n;
                k += 1;
                if left == 0 {
                    break;
                }
            }
            let text = desc.encode();
            if storage.size()? != 0 {
                storage.truncate(0)?;
            }
            storage.write_at(text.as_bytes(), 0)?;
        }
    }
    Ok(())
}
