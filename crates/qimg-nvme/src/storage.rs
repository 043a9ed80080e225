//! The `nvme` protocol node: a [`Storage`] over one namespace, so every format driver works on a
//! userspace NVMe controller (`nvme://0000:00:10.0/1`). Unaligned accesses are widened to whole
//! logical blocks (read-modify-write for partial blocks, serialised by one lock); the namespace
//! cannot grow.
use crate::controller::Controller;
use crate::err::{Error, ErrorCode, Result};
use crate::io::Namespace;
use qimg_core::storage::{DataRun, Storage};
use std::sync::{Arc, Mutex};

/// A namespace as a byte store.
#[derive(Debug)]
pub struct NvmeStorage {
    ns: Namespace,
    name: String,
    read_only: bool,
    rmw: Mutex<()>,
}

impl NvmeStorage {
    /// Open namespace `nsid` of the controller at `bdf`; `name` is used in messages.
    pub fn open(bdf: &str, nsid: u32, read_only: bool, name: &str) -> Result<Self> {
        let ctrl = Controller::open(bdf).map_err(|e| e.with_path(name))?;
        Self::on(&ctrl, nsid, read_only, name)
    }

    /// A store over namespace `nsid` of an already opened controller.
    pub fn on(ctrl: &Arc<Controller>, nsid: u32, read_only: bool, name: &str) -> Result<Self> {
        Ok(NvmeStorage {
            ns: Namespace::open(ctrl, nsid).map_err(|e| e.with_path(name))?,
            name: name.to_string(),
            read_only,
            rmw: Mutex::new(()),
        })
    }

    /// The namespace underneath.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    fn bs(&self) -> u64 {
        self.ns.block_size() as u64
    }

    /// Read within the namespace (`offset + buf.len() <= size`), any alignment: partial blocks
    /// through a one-block buffer, the aligned middle straight into `buf`.
    fn read_inside(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let bs = self.bs();
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            if !pos.is_multiple_of(bs) || end - pos < bs {
                let blk = pos / bs * bs;
                let mut t = vec![0u8; bs as usize];
                self.ns.read(blk, &mut t)?;
                let s = (pos - blk) as usize;
                let n = (bs - (pos - blk)).min(end - pos) as usize;
                let d = (pos - offset) as usize;
                buf[d..d + n].copy_from_slice(&t[s..s + n]);
                pos += n as u64;
            } else {
                let a1 = end / bs * bs;
                let d = (pos - offset) as usize;
                self.ns.read(pos, &mut buf[d..(a1 - offset) as usize])?;
                pos = a1;
            }
        }
        Ok(())
    }

    /// Cover `[offset, offset+len)`: the aligned middle via `whole(off, len)`, partial edge
    /// blocks by read-modify-write with `patch(block_bytes, block_offset)` under the RMW lock.
    fn edges(
        &self,
        offset: u64,
        len: u64,
        mut patch: impl FnMut(&mut [u8], u64),
        whole: impl FnOnce(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let bs = self.bs();
        let end = offset + len;
        let h = offset / bs * bs;
        let a0 = offset.next_multiple_of(bs);
        let a1 = end / bs * bs;
        let mut partial = Vec::new();
        if !offset.is_multiple_of(bs) {
            partial.push(h);
        }
        if !end.is_multiple_of(bs) && partial.first() != Some(&a1) {
            partial.push(a1);
        }
        let _g = if partial.is_empty() {
            None
        } else {
            Some(
                self.rmw
                    .lock()
                    .map_err(|_| Error::invalid("lock poisoned"))?,
            )
        };
        for blk in partial {
            let mut b = vec![0u8; bs as usize];
            self.ns.read(blk, &mut b)?;
            patch(&mut b, blk);
            self.ns.write(blk, &b)?;
        }
        if a1 > a0 {
            whole(a0, a1 - a0)?;
        }
        Ok(())
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorCode::ReadOnly,
                "The NVMe namespace is opened read-only",
            )
            .with_path(&self.name));
        }
        if offset.checked_add(len).is_none_or(|e| e > self.ns.size()) {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "Cannot write beyond the end of the NVMe namespace ({} bytes)",
                    self.ns.size()
                ),
            )
            .with_path(&self.name)
            .with_offset(offset));
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64, deallocate: bool) -> Result<()> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        self.edges(
            offset,
            len,
            |b, blk| {
                let s = offset.max(blk) - blk;
                let e = end.min(blk + b.len() as u64) - blk;
                b[s as usize..e as usize].fill(0);
            },
            |o, l| self.ns.write_zeroes(o, l, deallocate),
        )
    }
}

impl Storage for NvmeStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.ns.size();
        let inside = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[inside..].fill(0);
        if inside > 0 {
            self.read_inside(&mut buf[..inside], offset)
                .map_err(|e| e.with_path(&self.name))?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_write(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        self.edges(
            offset,
            buf.len() as u64,
            |b, blk| {
                let s = offset.max(blk);
                let e = end.min(blk + b.len() as u64);
                b[(s - blk) as usize..(e - blk) as usize]
                    .copy_from_slice(&buf[(s - offset) as usize..(e - offset) as usize]);
            },
            |o, l| {
                let s = (o - offset) as usize;
                self.ns.write(o, &buf[s..s + l as usize])
            },
        )
        .map_err(|e| e.with_path(&self.name))
    }

    fn size(&self) -> Result<u64> {
        Ok(self.ns.size())
    }

    fn truncate(&self, size: u64) -> Result<()> {
        if size > self.ns.size() {
            return Err(Error::unsupported("Cannot grow NVMe devices").with_path(&self.name));
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.ns.flush().map_err(|e| e.with_path(&self.name))
    }

    fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.zero_range(offset, length, true)
            .map_err(|e| e.with_path(&self.name))
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<()> {
        self.zero_range(offset, length, may_unmap)
            .map_err(|e| e.with_path(&self.name))
    }

    fn allocate(&self, offset: u64, length: u64) -> Result<()> {
        self.check_write(offset, length)
    }

    /// The namespace size (as the NBD storage does): `info` prints it as the protocol node's
    /// length; NVMe has no cheap, current allocation count.
    fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.ns.size())
    }

    fn data_run(&self, _offset: u64, length: u64) -> Result<DataRun> {
        Ok(DataRun {
            data: true,
            length: length.max(1),
        })
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
