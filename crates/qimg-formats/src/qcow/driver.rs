//! The qcow (v1) [`BlockDriver`]: the header and the shared table engine.
//!
//! Beyond QEMU: a partial write into a cluster not yet allocated here copies the rest of the
//! cluster from the backing layer (QEMU's qcow leaves it zero, which only its 512-byte clusters
//! for images with a backing file hide), and metadata is written only after the data it points
//! at is durable. Discard does nothing, as QEMU's qcow. Compressed writes (`convert -c`) deflate
//! each cluster with QEMU's 4 KiB window and pack it at the end of the file; a cluster that does
//! not shrink is stored plain, as QEMU does.
use super::header::{self, QcowHeader};
use super::mapping::{QcowTables, OFLAG_COMPRESSED};
use crate::l2map::{Entry, Geometry, TableMap};
use crate::legacy_aes::LegacyAes;
use crate::options::OpenOptions;
use crate::qcow2::compress;
use qimg_core::{
    BlockDriver, CompressedCluster, DriverInfo, Error, ErrorCode, LayerExtent, Result, Storage,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An opened qcow image.
pub struct QcowDriver {
    map: TableMap<QcowTables>,
    header: QcowHeader,
    backing_file: Option<String>,
    /// AES-encrypted (`crypt_method` 1); data I/O then needs the cipher.
    encrypted: bool,
    read_only: bool,
    closed: AtomicBool,
}

impl QcowDriver {
    /// Open and validate a qcow image.
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let file_len = storage.size()?;
        let mut first = vec![0u8; header::HEADER_LEN];
        storage.read_at(&mut first, 0)?;
        let h = QcowHeader::parse(&first, file_len)?;
        let backing_file = if h.backing_file_offset != 0 {
            let mut name = vec![0u8; h.backing_file_size as usize];
            storage.read_at(&mut name, h.backing_file_offset)?;
            Some(String::from_utf8_lossy(&name).into_owned())
        } else {
            None
        };
        let cs = h.cluster_size();
        let l2_entries = 1u64 << h.l2_bits;
        let geo = Geometry {
            cluster_size: cs,
            l2_entries,
            l2_reserve: (l2_entries * 8).next_multiple_of(cs),
            l1_offset: h.l1_table_offset,
            l1_entries: h.l1_entries(),
        };
        let fmt = QcowTables {
            cluster_bits: h.cluster_bits as u32,
            l2_bytes: l2_entries * 8,
            file_len,
        };
        let encrypted = h.crypt_method == header::CRYPT_AES;
        let key = opts.encryption_key_for(encrypted.then_some("aes"))?;
        let mut map = TableMap::load(storage, fmt, geo, file_len.next_multiple_of(cs), h.size)?;
        if let Some(k) = key {
            map.set_cipher(Arc::new(LegacyAes::new(k.as_bytes())));
        }
        Ok(QcowDriver {
            map,
            encrypted,
            header: h,
            backing_file,
            read_only: opts.read_only,
            closed: AtomicBool::new(false),
        })
    }

    /// Encrypted data without its key (opened for `info` only) cannot be read or written.
    fn data_io(&self) -> Result<()> {
        if self.encrypted && !self.map.encrypted() {
            return Err(Error::invalid(
                "Parameter 'encrypt.key-secret' is required for cipher",
            ));
        }
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        self.data_io()?;
        if self.read_only {
            return Err(Error::new(ErrorCode::ReadOnly, "Image is read-only"));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorCode::Internal, "image is closed"));
        }
        Ok(())
    }
}

impl BlockDriver for QcowDriver {
    fn format_name(&self) -> &'static str {
        "qcow"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        self.map.storage()
    }

    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.data_io()?;
        self.map.read(offset, buf)
    }

    fn encrypted(&self) -> bool {
        self.encrypted
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        self.map.write(offset, buf, &mut || Ok(()))
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_unmap: bool) -> Result<()> {
        self.writable()?;
        self.map.write_zeroes(offset, length, &mut || Ok(()))
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.writable()?;
        if offset
            .checked_add(length)
            .is_none_or(|e| e > self.header.size)
        {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                "discard beyond the image",
            ));
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        let v = self.map.block_status(offset, length)?;
        Ok(if self.encrypted {
            crate::legacy_aes::hide_offsets(v)
        } else {
            v
        })
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.map.flush()
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) || self.read_only {
            return Ok(());
        }
        self.map.flush()
    }

    fn info(&self) -> Result<DriverInfo> {
        Ok(DriverInfo {
            cluster_size: Some(self.header.cluster_size()),
            dirty: false,
            backing_file: self.backing_file.clone(),
            backing_format: None,
            format_specific: None,
        })
    }

    fn compressed_cluster_size(&self) -> Option<u64> {
        (!self.encrypted).then(|| self.header.cluster_size())
    }

    fn write_compressed(&self, offset: u64, data: &[u8], level: Option<u32>) -> Result<()> {
        self.writable()?;
        if self.encrypted {
            return Err(Error::unsupported(
                "Compression can't be used with encryption enabled",
            ));
        }
        let cs = self.header.cluster_size();
        let last = offset + data.len() as u64 == self.header.size;
        if !offset.is_multiple_of(cs)
            || data.len() as u64 > cs
            || (data.len() as u64 != cs && !last)
        {
            return Err(Error::invalid(
                "compressed writes must cover whole clusters",
            ));
        }
        let mut cluster = vec![0u8; cs as usize];
        cluster[..data.len()].copy_from_slice(data);
        let z = compress::compress(compress::ZLIB, level, &cluster)?;
        if z.len() as u64 >= cs {
            return self.write(offset, data);
        }
        let shift = 63 - self.header.cluster_bits as u32;
        let len = z.len() as u64;
        self.map.write_packed(offset / cs, &z, &|host| {
            OFLAG_COMPRESSED | (len << shift) | host
        })
    }

    fn read_compressed_raw(&self, offset: u64) -> Result<Option<CompressedCluster>> {
        let cs = self.header.cluster_size();
        match self.map.entries(offset / cs, 1)?[0] {
            Entry::Compressed(raw) => {
                let fmt = &self.map.fmt;
                let (off, len) = fmt.locate(raw);
                let mut data = vec![0u8; len as usize];
                self.map.storage().read_at(&mut data, off)?;
                Ok(Some(CompressedCluster {
                    kind: compress::ZLIB,
                    cluster_size: cs,
                    data,
                }))
            }
            _ => Ok(None),
        }
    }

    fn write_compressed_raw(&self, offset: u64, c: &CompressedCluster) -> Result<bool> {
        self.writable()?;
        let cs = self.header.cluster_size();
        if self.encrypted
            || c.kind != compress::ZLIB
            || c.cluster_size != cs
            || c.data.is_empty()
            || c.data.len() as u64 >= cs
            || !offset.is_multiple_of(cs)
        {
            return Ok(false);
        }
        let shift = 63 - self.header.cluster_bits as u32;
        let len = c.data.len() as u64;
        self.map.write_packed(offset / cs, &c.data, &|host| {
            OFLAG_COMPRESSED | (len << shift) | host
        })?;
        Ok(true)
    }

    fn make_empty(&self) -> Result<()> {
        self.writable()?;
        self.map.make_empty()
    }

    fn backing(&self) -> Option<Arc<dyn BlockDriver>> {
        self.map.backing()
    }

    fn set_backing(&self, backing: Option<Arc<dyn BlockDriver>>) -> Result<()> {
        self.map.set_backing(backing)
    }
}
