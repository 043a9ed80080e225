//! Reading a LUKS header through a [`Storage`] (the on-disk layouts are quoted in
//! `qimg_crypto::luks1::header` and `qimg_crypto::luks2`), and `info`'s `format-specific` block
//! in qemu-img's shape and field order.
use qimg_core::{Result, Storage};
use qimg_crypto::luks1::{HeaderIo, Luks1Header};
use serde_json::{json, Map, Value};

/// [`HeaderIo`] over a storage, with the header at `base`.
pub struct StorageIo<'a> {
    /// The storage holding the header.
    pub storage: &'a dyn Storage,
    /// Byte offset of the header in the storage.
    pub base: u64,
}

impl HeaderIo for StorageIo<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.storage.read_at(buf, self.base + offset)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.storage.write_at(buf, self.base + offset)
    }
    fn flush(&self) -> Result<()> {
        self.storage.flush()
    }
}

/// qemu-img's `format-specific` data for a LUKS1 header (`QCryptoBlockInfoLUKS`), in the order
/// qemu-img 10 prints it.
pub fn luks1_info(h: &Luks1Header) -> Value {
    let spec = h.cipher_spec().ok();
    let mut m = Map::new();
    if let Some(s) = &spec {
        if let Some(iv) = s.ivgen {
            m.insert("ivgen-alg".into(), json!(iv.name()));
        }
    }
    m.insert("detached-header".into(), json!(false));
    m.insert("hash-alg".into(), json!(h.hash_spec));
    if let Some(s) = &spec {
        m.insert("cipher-alg".into(), json!(s.alg.name()));
    }
    m.insert("uuid".into(), json!(h.uuid));
    if let Some(s) = &spec {
        if let Some(hh) = s.ivgen_hash {
            m.insert("ivgen-hash-alg".into(), json!(hh.name()));
        }
        m.insert("cipher-mode".into(), json!(s.mode.name()));
    }
    let slots: Vec<Value> = h
        .slots
        .iter()
        .map(|s| {
            if s.active {
                json!({"active": true, "iters": s.iterations,
                       "key-offset": s.key_offset as u64 * 512, "stripes": s.stripes})
            } else {
                json!({"active": false, "key-offset": s.key_offset as u64 * 512})
            }
        })
        .collect();
    m.insert("slots".into(), Value::Array(slots));
    m.insert("payload-offset".into(), json!(h.payload_offset_bytes()));
    m.insert("master-key-iters".into(), json!(h.mk_digest_iter));
    Value::Object(m)
}
