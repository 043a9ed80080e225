//! Image creation: create the host file, then let the format write its empty image.
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::file::{FileOptions, FileStorage};
use qimg_core::lock::LockMode;
use qimg_core::Storage;
use qimg_formats::{CreateOptions, EncryptionCreateOptions, EncryptionKey, Preallocation};
use std::sync::Arc;

/// Create options, validated in TypeScript (`-o` names mapped to fields).
#[napi(object)]
pub struct NativeCreateOptions {
    /// Host file name.
    pub filename: String,
    /// Format name.
    pub format: String,
    /// Virtual size in bytes.
    pub size: f64,
    /// `preallocation=`.
    pub preallocation: Option<String>,
    /// raw `nocow=`.
    pub nocow: Option<bool>,
    /// qcow2 `compat=`.
    pub compat: Option<String>,
    /// qcow2 `cluster_size=`.
    pub cluster_size: Option<f64>,
    /// qcow2 `refcount_bits=`.
    pub refcount_bits: Option<u32>,
    /// qcow2 `lazy_refcounts=`.
    pub lazy_refcounts: Option<bool>,
    /// `backing_file=`.
    pub backing_file: Option<String>,
    /// `backing_fmt=`.
    pub backing_fmt: Option<String>,
    /// qcow2 `extended_l2=`.
    pub extended_l2: Option<bool>,
    /// qcow2 `compression_type=`.
    pub compression_type: Option<String>,
    /// qcow2 `data_file=`.
    pub data_file: Option<String>,
    /// qcow2 `data_file_raw=`.
    pub data_file_raw: Option<bool>,
    /// vdi `static=`.
    pub static_image: Option<bool>,
    /// vpc `subformat=`.
    pub subformat: Option<String>,
    /// vpc `force_size=`.
    pub force_size: Option<bool>,
    /// qed `table_size=` (clusters).
    pub table_size: Option<f64>,
    /// vmdk `compat6=`.
    pub compat6: Option<bool>,
    /// vmdk `hwversion=`.
    pub hwversion: Option<String>,
    /// vmdk `adapter_type=`.
    pub adapter_type: Option<String>,
    /// vmdk `toolsversion=`.
    pub toolsversion: Option<String>,
    /// vmdk `zeroed_grain=`.
    pub zeroed_grain: Option<bool>,
    /// vhdx `block_size=` (bytes; 0 = automatic).
    pub block_size: Option<f64>,
    /// vhdx `log_size=` (bytes).
    pub log_size: Option<f64>,
    /// vhdx `block_state_zero=`.
    pub block_state_zero: Option<bool>,
    /// `encrypt.format=` (`aes`, `luks`; `encryption=on` is `aes`), or the luks format's own.
    pub encrypt_format: Option<String>,
    /// The resolved `encrypt.key-secret` / `key-secret` bytes (never logged or echoed).
    pub encryption_key: Option<Buffer>,
    /// The secret's id, as given.
    pub key_secret_id: Option<String>,
    /// LUKS `cipher-alg`.
    pub cipher_alg: Option<String>,
    /// LUKS `cipher-mode`.
    pub cipher_mode: Option<String>,
    /// LUKS `ivgen-alg`.
    pub ivgen_alg: Option<String>,
    /// LUKS `ivgen-hash-alg`.
    pub ivgen_hash_alg: Option<String>,
    /// LUKS `hash-alg`.
    pub hash_alg: Option<String>,
    /// LUKS `iter-time` (milliseconds).
    pub iter_time: Option<f64>,
}

/// Create (or overwrite) an image file.
#[napi(ts_return_type = "Promise<void>")]
pub fn create_image(opts: NativeCreateOptions) -> AsyncTask<Work<()>> {
    spawn(None, move || {
        let co = CreateOptions {
            size: crate::error::to_u64(opts.size, "size")?,
            preallocation: Preallocation::parse(opts.preallocation.as_deref().unwrap_or("off"))?,
            nocow: opts.nocow.unwrap_or(false),
            compat: opts.compat,
            cluster_size: opts
                .cluster_size
                .map(|c| crate::error::to_u64(c, "cluster_size"))
                .transpose()?,
            refcount_bits: opts.refcount_bits,
            lazy_refcounts: opts.lazy_refcounts.unwrap_or(false),
            backing_file: opts.backing_file,
            backing_fmt: opts.backing_fmt,
            extended_l2: opts.extended_l2.unwrap_or(false),
            compression_type: opts.compression_type,
            data_file: opts.data_file,
            data_file_raw: opts.data_file_raw.unwrap_or(false),
            static_image: opts.static_image.unwrap_or(false),
            subformat: opts.subformat,
            force_size: opts.force_size.unwrap_or(false),
            table_size: opts
                .table_size
                .map(|c| crate::error::to_u64(c, "table_size"))
                .transpose()?,
            compat6: opts.compat6.unwrap_or(false),
            hwversion: opts.hwversion,
            adapter_type: opts.adapter_type,
            toolsversion: opts.toolsversion,
            zeroed_grain: opts.zeroed_grain.unwrap_or(false),
            block_size: opts
                .block_size
                .map(|c| crate::error::to_u64(c, "block_size"))
                .transpose()?,
            log_size: opts
                .log_size
                .map(|c| crate::error::to_u64(c, "log_size"))
                .transpose()?,
            block_state_zero: opts.block_state_zero,
            encryption: EncryptionCreateOptions {
                format: opts.encrypt_format,
                key: opts
                    .encryption_key
                    .as_ref()
                    .map(|k| EncryptionKey::new(k.to_vec())),
                key_secret_id: opts.key_secret_id,
                cipher_alg: opts.cipher_alg,
                cipher_mode: opts.cipher_mode,
                ivgen_alg: opts.ivgen_alg,
                ivgen_hash_alg: opts.ivgen_hash_alg,
                hash_alg: opts.hash_alg,
                iter_time: opts
                    .iter_time
                    .map(|c| crate::error::to_u64(c, "iter-time"))
                    .transpose()?,
            },
        };
        let file = FileStorage::open(
            &opts.filename,
            &FileOptions {
                read_only: false,
                create: true,
                locking: LockMode::Auto,
                force_share: false,
                ..Default::default()
            },
        )?;
        if co.nocow {
            file.set_nocow();
        }
        let storage: Arc<dyn Storage> = Arc::new(file);
        qimg_formats::create_image(&opts.format, storage.clone(), &co)
            .map_err(|e| e.with_path(&opts.filename))?;
        storage.flush()
    })
}
