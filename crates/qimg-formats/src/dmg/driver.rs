//! The DMG [`BlockDriver`]: read-only; a read decodes each chunk it touches (the last decoded
//! chunk is kept), on the calling worker thread.
use super::compress::decode;
use super::header::{is_encrypted, kind, parse_mish, Koly, KOLY_SIZE, SECTOR};
use super::mapping::ChunkTable;
use super::plist::{blkx_from_rsrc, blkx_from_xml};
use crate::options::OpenOptions;
use crate::readonly;
use qimg_core::{BlockDriver, Error, ErrorCode, Result, Storage};
use std::sync::{Arc, Mutex};

/// An opened UDIF image.
pub struct DmgDriver {
    /// The image file.
    storage: Arc<dyn Storage>,
    /// The chunks.
    table: ChunkTable,
    /// The last decoded chunk: (index, bytes).
    cache: Mutex<Option<(usize, Vec<u8>)>>,
}

impl DmgDriver {
    /// Open `storage` as a UDIF image (read-only).
    pub fn open(storage: Arc<dyn Storage>, opts: &OpenOptions) -> Result<Self> {
        readonly::refuse_rw_open("dmg", opts.read_only, storage.name())?;
        Self::load(storage)
    }

    /// Read the trailer, the blkx tables and the chunks.
    fn load(storage: Arc<dyn Storage>) -> Result<Self> {
        let name = storage.name().to_owned();
        let file_size = storage.size()?;
        let mut head = [0u8; 8];
        storage.read_at(&mut head, 0)?;
        if file_size < KOLY_SIZE {
            return Err(
                Error::new(ErrorCode::WrongFormat, "Image not in DMG (UDIF) format")
                    .with_path(&name),
            );
        }
        let mut tail = [0u8; KOLY_SIZE as usize];
        storage.read_at(&mut tail, file_size - KOLY_SIZE)?;
        if is_encrypted(&head, &tail) {
            return Err(Error::unsupported(
                "dmg: encrypted images are not supported (decrypt them with hdiutil first)",
            )
            .with_path(&name));
        }
        let k = Koly::parse(&tail, file_size).map_err(|e| e.with_path(&name))?;
        let tables = if k.xml.1 > 0 {
            let mut xml = vec![0u8; k.xml.1 as usize];
            storage.read_at(&mut xml, k.xml.0)?;
            blkx_from_xml(&xml)
        } else {
            let mut fork = vec![0u8; k.rsrc.1 as usize];
            storage.read_at(&mut fork, k.rsrc.0)?;
            blkx_from_rsrc(&fork)
        }
        .map_err(|e| e.with_path(&name))?;
        let mut chunks = Vec::new();
        for t in &tables {
            parse_mish(t, k.data_fork_offset, file_size - KOLY_SIZE, &mut chunks)
                .map_err(|e| e.with_path(&name))?;
        }
        let table = ChunkTable::new(chunks).map_err(|e| e.with_path(&name))?;
        Ok(DmgDriver {
            storage,
            table,
            cache: Mutex::new(None),
        })
    }

    /// Copy bytes `[within, within + dst.len())` of chunk `i` into `dst`.
    fn read_chunk(&self, i: usize, within: u64, dst: &mut [u8]) -> Result<()> {
        let c = self.table.chunks[i];
        match c.kind {
            kind::ZERO | kind::IGNORE => {
                dst.fill(0);
                return Ok(());
            }
            kind::RAW => return self.storage.read_at(dst, c.offset + within),
            _ => {}
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ci, data)) = cache.as_ref() {
            if *ci == i {
                dst.copy_from_slice(&data[within as usize..within as usize + dst.len()]);
                return Ok(());
            }
        }
        let mut src = vec![0u8; c.length as usize];
        self.storage.read_at(&mut src, c.offset)?;
        let mut data = vec![0u8; (c.count * SECTOR) as usize];
        decode(c.kind, &src, &mut data, i).map_err(|e| e.with_path(self.storage.name()))?;
        dst.copy_from_slice(&data[within as usize..within as usize + dst.len()]);
        *cache = Some((i, data));
        Ok(())
    }
}

impl BlockDriver for DmgDriver {
    fn format_name(&self) -> &'static str {
        "dmg"
    }

    fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn virtual_size(&self) -> u64 {
        self.table.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::guard::in_range(
            offset,
            buf.len() as u64,
            self.table.size,
            self.storage.name(),
        )?;
        let mut pos = offset;
        let end = offset + buf.len() as u64;
        while pos < end {
            let sector = pos / SECTOR;
            let (stop, chunk) = match self.table.find(sector) {
                Ok(i) => {
                    let c = self.table.chunks[i];
                    ((c.sector + c.count) * SECTOR, Some(i))
                }
                Err(next) => (
                    self.table
                        .chunks
                        .get(next)
                        .map_or(end, |c| c.sector * SECTOR),
                    None,
                ),
            };
            let stop = stop.min(end);
            let dst = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
            match chunk {
                Some(i) => {
                    let within = pos - self.table.chunks[i].sector * SECTOR;
                    self.read_chunk(i, within, dst)?;
                }
                None => dst.fill(0),
            }
            pos = stop;
        }
        Ok(())
    }

    readonly::read_only_methods!("dmg");
}
