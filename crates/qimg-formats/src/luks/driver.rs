//! The `luks` block driver: guest byte `g` lives at host byte `payload + g`, encrypted in
//! 512-byte sectors (LUKS2: the segment's sector size) whose IV is the payload-relative sector
//! number. Unaligned requests read-modify-write whole sectors under an exclusive lock; aligned
//! requests run in parallel.
use super::header::{luks1_info, StorageIo};
use crate::options::OpenOptions;
use qimg_core::{
    BlockDriver, DriverInfo, Error, ErrorCode, LayerExtent, LayerStatus, Result, Storage,
};
use qimg_crypto::luks1::header::HEADER_LEN as HEADER_LEN_BYTES;
use qimg_crypto::luks1::Luks1Header;
use qimg_crypto::SectorCipher;
use std::sync::{Arc, Mutex, RwLock};

/// Bytes of zeros encrypted per write when zeroing a range.
const ZERO_CHUNK: u64 = 1 << 20;

/// Which header the image has.
pub(crate) enum Header {
    /// LUKS1 (QEMU's format).
    V1(Box<Luks1Header>),
    /// LUKS2 (read-only; its `info` block).
    V2(Box<qimg_crypto::luks2::Luks2Header>),
}

/// An opened LUKS image.
pub struct LuksDriver {
    storage: Arc<dyn Storage>,
    pub(crate) header: Mutex<Header>,
    /// Payload start in the storage, in bytes.
    payload: u64,
    /// Guest size.
    size: u64,
    /// The payload cipher; `None` when opened without a key (`info` only).
    cipher: Option<SectorCipher>,
    /// The master key, kept for adding key slots (`amend`).
    pub(crate) master_key: Option<Vec<u8>>,
    read_only: bool,
    /// Aligned I/O takes it shared, read-modify-write exclusive.
    rmw: RwLock<()>,
}

fn poisoned() -> Error {
    Error::new(ErrorCode::Internal, "lock poisoned")
}

/// The error for I/O on an image opened without its key.
pub fn key_required() -> Error {
    Error::invalid("Parameter 'key-secret' is required for cipher")
}

/// Largest scratch buffer a thread keeps for encrypting writes.
const SCRATCH_MAX: usize = 4 << 20;

thread_local! {
    /// Per-thread scratch for [`LuksDriver::write_sectors_from`].
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl LuksDriver {
    /// Open `storage` as LUKS. With `opts.encryption_key` the master key is unlocked (every
    /// active slot tried, PBKDF work capped by [`OpenOptions::work_limits`]: default caps, and
    /// cancellable through `opts.cancel`); without it the image
    /// opens for `info` only and I/O fails.
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        let file_len = storage.size()?;
        let mut first = vec![0u8; HEADER_LEN_BYTES.min(file_len as usize)];
        storage.read_at(&mut first, 0)?;
        if first.len() >= 8 && first[6..8] == [0, 2] {
            return Self::open_v2(storage, opts, file_len);
        }
        let h = Luks1Header::parse(&first)?;
        h.check_payload(file_len)?;
        let payload = h.payload_offset_bytes();
        let (cipher, master_key) = match &opts.encryption_key {
            Some(key) => {
                let io = StorageIo {
                    storage: &*storage,
                    base: 0,
                };
                let u = h.unlock(&io, key.as_bytes(), &opts.work_limits())?;
                (Some(h.payload_cipher(&u.master_key)?), Some(u.master_key))
            }
            None => (None, None),
        };
        Ok(Self {
            size: (file_len - payload) & !511,
            storage,
            header: Mutex::new(Header::V1(Box::new(h))),
            payload,
            cipher,
            master_key,
            read_only: opts.read_only,
            rmw: RwLock::new(()),
        })
    }

    fn open_v2(storage: Arc<dyn Storage>, opts: &OpenOptions, file_len: u64) -> Result<Self> {
        let io = StorageIo {
            storage: &*storage,
            base: 0,
        };
        let h = qimg_crypto::luks2::Luks2Header::read(&io, file_len)?;
        let seg = h.segment()?;
        let payload = seg.offset;
        let size = match seg.size {
            Some(s) => s,
            None => file_len.saturating_sub(payload),
        } & !(seg.sector_size as u64 - 1);
        let cipher = match &opts.encryption_key {
            Some(key) => {
                let mk = h.unlock(&io, key.as_bytes(), &opts.work_limits())?;
                Some(h.payload_cipher(&mk)?)
            }
            None => None,
        };
        if !opts.read_only && opts.encryption_key.is_some() {
            return Err(Error::unsupported(
                "LUKS2 images can only be opened read-only",
            ));
        }
        Ok(Self {
            storage,
            header: Mutex::new(Header::V2(Box::new(h))),
            payload,
            size,
            cipher,
            master_key: None,
            read_only: true,
            rmw: RwLock::new(()),
        })
    }

    fn cipher(&self) -> Result<&SectorCipher> {
        self.cipher.as_ref().ok_or_else(key_required)
    }

    fn bounds(&self, offset: u64, len: u64) -> Result<()> {
        crate::guard::in_range(offset, len, self.size, self.storage.name())
    }

    fn writable(&self) -> Result<()> {
        crate::guard::writable(self.read_only, self.storage.name())
    }

    /// Read and decrypt whole sectors at guest `offset` (sector-aligned) into `buf`.
    fn read_sectors(&self, c: &SectorCipher, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.storage.read_at(buf, self.payload + offset)?;
        c.decrypt(offset / c.sector_size() as u64, buf)
    }

    /// Encrypt `buf` (whole sectors, consumed) and write it at guest `offset` (aligned).
    fn write_sectors(&self, c: &SectorCipher, offset: u64, mut buf: Vec<u8>) -> Result<()> {
        c.encrypt(offset / c.sector_size() as u64, &mut buf)?;
        self.storage.write_at(&buf, self.payload + offset)
    }

    /// Encrypt a copy of `data` (whole sectors) and write it at guest `offset` (aligned), through
    /// a per-thread page-aligned scratch buffer of at most [`SCRATCH_MAX`] bytes: no allocation
    /// per write, and O_DIRECT files (`cache=none`) take it without a bounce copy.
    fn write_sectors_from(&self, c: &SectorCipher, offset: u64, data: &[u8]) -> Result<()> {
        let ss = c.sector_size();
        let piece = SCRATCH_MAX / ss * ss;
        SCRATCH.with(|s| {
            let mut v = s.borrow_mut();
            for (i, part) in data.chunks(piece).enumerate() {
                let at = offset + (i * piece) as u64;
                let b = qimg_core::direct::aligned_slice(&mut v, part.len(), 4096);
                b.copy_from_slice(part);
                c.encrypt(at / ss as u64, b)?;
                self.storage.write_at(b, self.payload + at)?;
            }
            Ok(())
        })
    }
}

impl BlockDriver for LuksDriver {
    fn format_name(&self) -> &'static str {
        "luks"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.bounds(offset, buf.len() as u64)?;
        let c = self.cipher()?;
        let ss = c.sector_size() as u64;
        let end = offset + buf.len() as u64;
        let (start, aend) = (offset / ss * ss, end.div_ceil(ss) * ss);
        let _g = self.rmw.read().map_err(|_| poisoned())?;
        if start == offset && aend == end {
            return self.read_sectors(c, offset, buf);
        }
        let mut tmp = vec![0u8; (aend - start) as usize];
        self.read_sectors(c, start, &mut tmp)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        self.bounds(offset, buf.len() as u64)?;
        let c = self.cipher()?;
        let ss = c.sector_size() as u64;
        let end = offset + buf.len() as u64;
        let (start, aend) = (offset / ss * ss, end.div_ceil(ss) * ss);
        if start == offset && aend == end {
            let _g = self.rmw.read().map_err(|_| poisoned())?;
            return self.write_sectors_from(c, offset, buf);
        }
        let _g = self.rmw.write().map_err(|_| poisoned())?;
        let mut tmp = vec![0u8; (aend - start) as usize];
        let n = tmp.len();
        self.read_sectors(c, start, &mut tmp[..ss as usize])?;
        if aend - ss > start {
            self.read_sectors(c, aend - ss, &mut tmp[n - ss as usize..])?;
        }
        let skip = (offset - start) as usize;
        tmp[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_sectors(c, start, tmp)
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_unmap: bool) -> Result<()> {
        self.writable()?;
        self.bounds(offset, length)?;
        // Zeros must be stored encrypted: write them as data, as QEMU's fallback does.
        let mut pos = offset;
        let end = offset + length;
        while pos < end {
            let n = (end - pos).min(ZERO_CHUNK - pos % ZERO_CHUNK);
            self.write(pos, &vec![0u8; n as usize])?;
            pos += n;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        // Discarded ranges must read back stable; zeros are.
        self.write_zeroes(offset, length, true)
    }

    fn block_status(&self, offset: u64, length: u64) -> Result<Vec<LayerExtent>> {
        self.bounds(offset, length)?;
        if length == 0 {
            return Ok(Vec::new());
        }
        // As QEMU's crypto driver (no block-status callback): all data, no host offset.
        Ok(vec![LayerExtent {
            start: offset,
            length,
            status: LayerStatus::Data {
                host_offset: None,
                compressed: false,
                reads_zero: false,
            },
        }])
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.storage.flush()
    }

    fn close(&self) -> Result<()> {
        self.flush()
    }

    fn info(&self) -> Result<DriverInfo> {
        let h = self.header.lock().map_err(|_| poisoned())?;
        let data = match &*h {
            Header::V1(h) => luks1_info(h),
            Header::V2(h) => h.info(),
        };
        Ok(DriverInfo {
            format_specific: Some(serde_json::json!({"type": "luks", "data": data})),
            ..Default::default()
        })
    }

    fn encrypted(&self) -> bool {
        true
    }

    fn amend(&self, options: &[(String, String)]) -> Result<()> {
        self.writable()?;
        super::amend::amend(self, options)
    }
}
