//! `NativeImage`: one opened image (format driver over a file) with async range operations.
use crate::error::{invalid, to_napi, to_u64};
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::chain::map_extents;
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::lock::{LockMode, PermSet};
use qimg_core::{BlockDriver, RepairMode, Storage};
use std::sync::{Arc, Mutex};

/// How to open an image (already validated and normalized by TypeScript).
#[napi(object)]
pub struct OpenImageOptions {
    /// Host file name.
    pub filename: String,
    /// Format driver name (`raw`, `qcow2`).
    pub format: String,
    /// Open read-only.
    pub read_only: bool,
    /// `file.locking`: `on`, `off` or `auto` (default `auto`).
    pub locking: Option<String>,
    /// `-U` / `force-share`: share every permission (read-only opens only).
    pub force_share: Option<bool>,
    /// `info`: take the image locks `qemu-img info` takes (metadata only), not a reader's.
    pub purpose: Option<String>,
    /// The `nbd` protocol instead of a host file (`filename` then only names it in messages).
    pub nbd: Option<NbdTarget>,
    /// The resolved `key-secret` / `encrypt.key-secret` bytes (never logged or echoed).
    pub encryption_key: Option<Buffer>,
    /// `encrypt.format` given at open: must match the image header.
    pub encrypt_format: Option<String>,
    /// The `nvme` protocol (a namespace of a controller bound to vfio-pci) instead of a file.
    pub nvme: Option<NvmeTarget>,
    /// Cache mode of the host file (`-t`/`-T`): `writeback` (default), `none`/`off`,
    /// `writethrough`, `directsync`, `unsafe`.
    pub cache: Option<String>,
}

/// An NVMe namespace to open (QEMU's `file.driver=nvme` options).
#[napi(object)]
pub struct NvmeTarget {
    /// PCI address `DDDD:BB:SS.F` (`file.device`).
    pub device: String,
    /// Namespace ID (`file.namespace`, default 1).
    pub namespace: Option<u32>,
}

/// An NBD export to open (QEMU's `file.driver=nbd` options).
#[napi(object)]
pub struct NbdTarget {
    /// `inet` or `unix`.
    pub server_type: String,
    /// Host name or address (`inet`).
    pub host: Option<String>,
    /// TCP port (`inet`; default 10809).
    pub port: Option<u32>,
    /// Socket path (`unix`).
    pub path: Option<String>,
    /// Export name (default "").
    pub export: Option<String>,
    /// TLS (`tls-creds` / `tls-hostname`); required when present.
    pub tls: Option<crate::nbd::NbdTls>,
    /// Connections to open when the server advertises multi-conn (`multi-conn`, default 4).
    pub connections: Option<u32>,
}

/// The storage an image opens on: an NBD export, or the host file.
fn open_storage(
    opts: &OpenImageOptions,
    fo: &FileOptions,
    perms: PermSet,
) -> qimg_core::Result<Arc<dyn Storage>> {
    if let Some(n) = &opts.nvme {
        return Ok(Arc::new(qimg_nvme::NvmeStorage::open(
            &n.device,
            n.namespace.unwrap_or(1),
            opts.read_only,
            &opts.filename,
        )?));
    }
    let Some(n) = &opts.nbd else {
        return Ok(Arc::new(FileStorage::open_with_perms(
            &opts.filename,
            fo,
            perms,
        )?));
    };
    let addr = crate::nbd::address(n)?;
    let export = n.export.clone().unwrap_or_default();
    let o = qimg_core::nbd::ConnectOptions {
        read_only: opts.read_only,
        tls: crate::nbd::tls_config(&n.tls)?,
        connections: n
            .connections
            .map_or(qimg_core::nbd::DEFAULT_CONNECTIONS, |c| c as usize),
        write_through: fo.cache.write_through(),
        ..Default::default()
    };
    Ok(Arc::new(qimg_core::nbd::NbdStorage::connect_with(
        &addr,
        &export,
        &opts.filename,
        &o,
    )?))
}

/// One extent of `qemu-img map --output=json`.
#[napi(object)]
pub struct MapEntry {
    /// Guest offset.
    pub start: f64,
    /// Length in bytes.
    pub length: f64,
    /// Layer that decided the range (0 = top).
    pub depth: u32,
    /// Allocated in some layer.
    pub present: bool,
    /// Reads as zeros.
    pub zero: bool,
    /// Holds data.
    pub data: bool,
    /// Stored compressed.
    pub compressed: bool,
    /// Host offset in the deciding layer, when meaningful.
    pub offset: Option<f64>,
}

/// Facts about an opened image for `info`.
#[napi(object)]
pub struct NativeInfo {
    /// Format driver name.
    pub format: String,
    /// Guest size.
    pub virtual_size: f64,
    /// Host bytes used by the image file.
    pub actual_size: f64,
    /// Cluster size, if the format has one.
    pub cluster_size: Option<f64>,
    /// Dirty flag.
    pub dirty: bool,
    /// Backing file as stored in the image.
    pub backing_file: Option<String>,
    /// Backing format as stored in the image.
    pub backing_format: Option<String>,
    /// qemu-img's `format-specific` object, as JSON text.
    pub format_specific_json: Option<String>,
    /// Guest data is encrypted (`encrypted: yes`).
    pub encrypted: bool,
}

/// The result of a consistency check.
#[napi(object)]
pub struct NativeCheck {
    /// Corruptions left.
    pub corruptions: f64,
    /// Leaks left.
    pub leaks: f64,
    /// Errors while checking.
    pub check_errors: f64,
    /// Corruptions fixed.
    pub corruptions_fixed: f64,
    /// Leaks fixed.
    pub leaks_fixed: f64,
    /// End of used host space.
    pub image_end_offset: Option<f64>,
    /// Total clusters.
    pub total_clusters: Option<f64>,
    /// Allocated clusters.
    pub allocated_clusters: Option<f64>,
    /// Fragmented clusters.
    pub fragmented_clusters: Option<f64>,
    /// Compressed clusters.
    pub compressed_clusters: Option<f64>,
    /// Findings, one line each.
    pub messages: Vec<String>,
}

/// An opened image. Close it explicitly: closing flushes and releases the image locks.
#[napi]
pub struct NativeImage {
    slot: Arc<Mutex<Option<Arc<dyn BlockDriver>>>>,
    format: String,
    virtual_size: f64,
}

impl NativeImage {
    /// The driver, or an error once closed.
    pub fn driver(&self) -> qimg_core::Result<Arc<dyn BlockDriver>> {
        let guard = self
            .slot
            .lock()
            .map_err(|_| invalid("image lock poisoned"))?;
        guard.clone().ok_or_else(|| invalid("the image is closed"))
    }

    /// Wrap an opened driver (a snapshot view, for example).
    pub fn from_driver(driver: Arc<dyn BlockDriver>) -> Self {
        NativeImage {
            format: driver.format_name().to_string(),
            virtual_size: driver.virtual_size() as f64,
            slot: Arc::new(Mutex::new(Some(driver))),
        }
    }

    pub(crate) fn run<T: Send + ToNapiValue + TypeName + 'static>(
        &self,
        f: impl FnOnce(Arc<dyn BlockDriver>) -> qimg_core::Result<T> + Send + 'static,
    ) -> AsyncTask<Work<T>> {
        let d = self.driver();
        spawn(None, move || f(d?))
    }
}

fn parse_locking(s: Option<&str>) -> qimg_core::Result<LockMode> {
    match s.unwrap_or("auto") {
        "on" | "true" => Ok(LockMode::On),
        "off" | "false" => Ok(LockMode::Off),
        "auto" => Ok(LockMode::Auto),
        other => Err(invalid(format!(
            "Parameter 'locking' does not accept value '{other}'"
        ))),
    }
}

/// Open an image: the file protocol, then the format driver on top. `cancel`, when given and
/// set, stops key derivation (`ERR_QIMG_ABORTED`).
#[napi(ts_return_type = "Promise<NativeImage>")]
pub fn open_image(
    opts: OpenImageOptions,
    cancel: Option<&crate::cancel::CancelFlag>,
) -> AsyncTask<Work<NativeImage>> {
    let cancel = cancel.map(|c| c.shared());
    spawn(None, move || {
        let force_share = opts.force_share.unwrap_or(false);
        let fo = FileOptions {
            read_only: opts.read_only,
            create: false,
            locking: parse_locking(opts.locking.as_deref())?,
            force_share,
            cache: match opts.cache.as_deref() {
                Some(c) => qimg_core::direct::CacheMode::parse(c)?,
                None => Default::default(),
            },
        };
        let perms = if opts.purpose.as_deref() == Some("info") && opts.read_only {
            // What qemu-img info takes: no consistent-read byte (it reads only metadata), and on
            // raw — or with -U — no lock at all.
            if force_share || opts.format == "raw" {
                PermSet::NONE
            } else {
                PermSet::INFO
            }
        } else {
            PermSet::for_open(opts.read_only, force_share)
        };
        let storage = open_storage(&opts, &fo, perms)?;
        let fo = qimg_formats::OpenOptions {
            read_only: opts.read_only,
            encryption_key: opts
                .encryption_key
                .as_ref()
                .map(|k| qimg_formats::EncryptionKey::new(k.to_vec())),
            encrypt_format: opts.encrypt_format.clone(),
            metadata_only: opts.purpose.as_deref() == Some("info"),
            cancel,
        };
        let driver = qimg_formats::open_driver(&opts.format, storage, &fo)
            .map_err(|e| e.with_path(&opts.filename))?;
        Ok(NativeImage {
            format: driver.format_name().to_string(),
            virtual_size: driver.virtual_size() as f64,
            slot: Arc::new(Mutex::new(Some(driver))),
        })
    })
}

fn to_entry(e: &qimg_core::chain::MapExtent) -> MapEntry {
    MapEntry {
        start: e.start as f64,
        length: e.length as f64,
        depth: e.depth,
        present: e.present,
        zero: e.zero,
        data: e.data,
        compressed: e.compressed,
        offset: e.offset.map(|o| o as f64),
    }
}

#[napi]
impl NativeImage {
    /// Format driver name.
    #[napi(getter)]
    pub fn format(&self) -> String {
        self.format.clone()
    }

    /// Guest size in bytes (as of open or the last resize through this handle).
    #[napi(getter)]
    pub fn virtual_size(&self) -> f64 {
        self.driver()
            .map(|d| d.virtual_size() as f64)
            .unwrap_or(self.virtual_size)
    }

    /// Read `buf.length` guest bytes at `offset` into `buf`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn read(&self, offset: f64, mut buf: Buffer) -> AsyncTask<Work<()>> {
        self.run(move |d| d.read(to_u64(offset, "offset")?, buf.as_mut()))
    }

    /// Write all of `buf` at guest `offset`; with `fua`, durable before the promise resolves
    /// (NBD: `NBD_CMD_FLAG_FUA`; elsewhere the write and a flush).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write(&self, offset: f64, buf: Buffer, fua: Option<bool>) -> AsyncTask<Work<()>> {
        self.run(move |d| {
            let offset = to_u64(offset, "offset")?;
            if fua == Some(true) {
                d.write_fua(offset, buf.as_ref())
            } else {
                d.write(offset, buf.as_ref())
            }
        })
    }

    /// Write one whole cluster at guest `offset` compressed (qcow2; the image's last cluster may
    /// be shorter), at `level` or the format's default.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_compressed(
        &self,
        offset: f64,
        buf: Buffer,
        level: Option<u32>,
    ) -> AsyncTask<Work<()>> {
        self.run(move |d| d.write_compressed(to_u64(offset, "offset")?, buf.as_ref(), level))
    }

    /// Make a guest range read as zeros (`mayUnmap` lets the driver free space).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_zeroes(
        &self,
        offset: f64,
        length: f64,
        may_unmap: Option<bool>,
    ) -> AsyncTask<Work<()>> {
        self.run(move |d| {
            d.write_zeroes(
                to_u64(offset, "offset")?,
                to_u64(length, "length")?,
                may_unmap.unwrap_or(false),
            )
        })
    }

    /// Make a raw image covering its whole storage read as zeros if the storage can do that
    /// fast (an NBD export with `FAST_ZERO`): true when done, false when not (nothing changed
    /// that a later write depends on), as qemu-img convert's pre-zeroing of a target.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn make_zero_fast(&self) -> AsyncTask<Work<bool>> {
        self.run(|d| {
            let s = d.storage();
            if d.format_name() != "raw" || s.size()? != d.virtual_size() {
                return Ok(false);
            }
            s.make_zero_fast()
        })
    }

    /// Discard a guest range.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn discard(&self, offset: f64, length: f64) -> AsyncTask<Work<()>> {
        self.run(move |d| d.discard(to_u64(offset, "offset")?, to_u64(length, "length")?))
    }

    /// Block status of a guest range through the backing chain (a prefix may be returned).
    #[napi(ts_return_type = "Promise<Array<MapEntry>>")]
    pub fn block_status(&self, offset: f64, length: f64) -> AsyncTask<Work<Vec<MapEntry>>> {
        self.run(move |d| {
            Ok(map_extents(
                d.as_ref(),
                to_u64(offset, "offset")?,
                to_u64(length, "length")?,
            )?
            .iter()
            .map(to_entry)
            .collect())
        })
    }

    /// Flush data then metadata to stable storage.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn flush(&self) -> AsyncTask<Work<()>> {
        self.run(|d| d.flush())
    }

    /// Change the guest size.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn resize(&self, size: f64) -> AsyncTask<Work<()>> {
        self.run(move |d| d.resize(to_u64(size, "size")?))
    }

    /// Change the guest size as `qemu-img resize` does: shrink, or grow with QEMU's
    /// preallocation mode (`off`, `metadata`, `falloc`, `full`) for the new area.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn truncate(&self, size: f64, preallocation: String) -> AsyncTask<Work<()>> {
        self.run(move |d| d.truncate(to_u64(size, "size")?, &preallocation))
    }

    /// `qemu-img amend`: change format options in place (validated `[name, value]` pairs).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn amend(&self, options: Vec<Vec<String>>) -> AsyncTask<Work<()>> {
        let pairs: Vec<(String, String)> = options
            .into_iter()
            .filter_map(|mut kv| (kv.len() == 2).then(|| (kv.remove(0), kv.remove(0))))
            .collect();
        self.run(move |d| d.amend(&pairs))
    }

    /// Facts for `info`.
    #[napi(ts_return_type = "Promise<NativeInfo>")]
    pub fn info(&self) -> AsyncTask<Work<NativeInfo>> {
        self.run(|d| {
            let i = d.info()?;
            Ok(NativeInfo {
                format: d.format_name().to_string(),
                virtual_size: d.virtual_size() as f64,
                actual_size: d.storage().allocated_bytes()? as f64,
                cluster_size: i.cluster_size.map(|c| c as f64),
                dirty: i.dirty,
                backing_file: i.backing_file,
                backing_format: i.backing_format,
                format_specific_json: i.format_specific.map(|v| v.to_string()),
                encrypted: d.encrypted(),
            })
        })
    }

    /// Check consistency; `repair` is `none`, `leaks` or `all`.
    #[napi(ts_return_type = "Promise<NativeCheck>")]
    pub fn check(&self, repair: String) -> AsyncTask<Work<NativeCheck>> {
        self.run(move |d| {
            let mode = match repair.as_str() {
                "none" => RepairMode::None,
                "leaks" => RepairMode::Leaks,
                "all" => RepairMode::All,
                o => return Err(invalid(format!("Unknown option for -r: '{o}'"))),
            };
            let r = d.check(mode)?;
            let f = |v: Option<u64>| v.map(|x| x as f64);
            Ok(NativeCheck {
                corruptions: r.corruptions as f64,
                leaks: r.leaks as f64,
                check_errors: r.check_errors as f64,
                corruptions_fixed: r.corruptions_fixed as f64,
                leaks_fixed: r.leaks_fixed as f64,
                image_end_offset: f(r.image_end_offset),
                total_clusters: f(r.total_clusters),
                allocated_clusters: f(r.allocated_clusters),
                fragmented_clusters: f(r.fragmented_clusters),
                compressed_clusters: f(r.compressed_clusters),
                messages: r.messages,
            })
        })
    }

    /// Attach the backing image (opened by the graph builder), or detach with `null`.
    #[napi]
    pub fn set_backing(&self, backing: Option<&NativeImage>) -> napi::Result<()> {
        let d = self.driver().map_err(to_napi)?;
        let b = match backing {
            Some(b) => Some(b.driver().map_err(to_napi)?),
            None => None,
        };
        d.set_backing(b).map_err(to_napi)
    }

    /// Flush, clear dirty marks and release locks. Further calls fail; closing twice is a no-op.
    /// The host file is flushed even with `cache=unsafe`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<Work<()>> {
        let slot = self.slot.clone();
        spawn(None, move || {
            let d = slot
                .lock()
                .map_err(|_| invalid("image lock poisoned"))?
                .take();
            match d {
                Some(d) => {
                    d.close()?;
                    // `cache=unsafe` drops the drivers' flushes; what a command wrote is still
                    // durable once it closes the image (qimg's rule for a successful exit).
                    if !d.storage().read_only() {
                        d.storage().flush_durable()?;
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }
}
