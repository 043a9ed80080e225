//! Requests for servers with a minimum block size (`NBD_INFO_BLOCK_SIZE` minimum above 1, as
//! `nbdkit --filter=blocksize-policy` or a 4 KiB-sector device can ask): reads of partial blocks
//! go through a bounce block, writes and write zeroes of partial blocks are read-modify-write
//! (serialised among themselves), trims shrink to whole blocks (they are hints), and block
//! status is asked from the block start. Aligned ranges go straight to the server.
use super::*;

impl NbdStorage {
    fn align(&self) -> u64 {
        (self.export.min_block as u64).max(1)
    }

    /// The partial-block split of `[offset, end)`: (first aligned offset ≥ offset, clamped to end;
    /// last aligned offset ≤ end, at least `first`).
    fn split(&self, offset: u64, end: u64) -> (u64, u64) {
        let a = self.align();
        let first = offset.div_ceil(a).saturating_mul(a).min(end);
        let last = (end / a * a).max(first);
        (first, last)
    }

    /// Read the block holding `at` (clamped to the export) and copy `[from, to)` of it into `out`.
    fn read_partial(&self, out: &mut [u8], from: u64, to: u64) -> Result<()> {
        let a = self.align();
        let start = from / a * a;
        let stop = (start + a).min(self.export.size).max(to);
        let mut tmp = vec![0u8; (stop - start) as usize];
        self.read_aligned(&mut tmp, start)?;
        out.copy_from_slice(&tmp[(from - start) as usize..(to - start) as usize]);
        Ok(())
    }

    /// Read any range inside the export.
    pub(super) fn read_any(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset + buf.len() as u64;
        let a = self.align();
        if a == 1
            || (offset.is_multiple_of(a) && (end.is_multiple_of(a) || end == self.export.size))
        {
            return self.read_aligned(buf, offset);
        }
        let (first, last) = self.split(offset, end);
        let at = |x: u64| (x - offset) as usize;
        if first > offset {
            self.read_partial(&mut buf[..at(first)], offset, first)?;
        }
        if last > first {
            self.read_aligned(&mut buf[at(first)..at(last)], first)?;
        }
        if end > last {
            self.read_partial(&mut buf[at(last)..], last, end)?;
        }
        Ok(())
    }

    /// Read-modify-write of `data` at `from` inside one block.
    fn write_partial(&self, data: &[u8], from: u64, flags: u16) -> Result<()> {
        let a = self.align();
        let start = from / a * a;
        let stop = (start + a).min(self.export.size);
        let mut tmp = vec![0u8; (stop - start) as usize];
        self.read_aligned(&mut tmp, start)?;
        let s = (from - start) as usize;
        tmp[s..s + data.len()].copy_from_slice(data);
        self.write_aligned(&tmp, start, flags)
    }

    /// Write any range inside the export.
    pub(super) fn write_any(&self, buf: &[u8], offset: u64, flags: u16) -> Result<()> {
        let end = offset + buf.len() as u64;
        let a = self.align();
        if a == 1
            || (offset.is_multiple_of(a) && (end.is_multiple_of(a) || end == self.export.size))
        {
            return self.write_aligned(buf, offset, flags);
        }
        let (first, last) = self.split(offset, end);
        let at = |x: u64| (x - offset) as usize;
        if last > first {
            self.write_aligned(&buf[at(first)..at(last)], first, flags)?;
        }
        let _g = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
        if first > offset {
            self.write_partial(&buf[..at(first)], offset, flags)?;
        }
        if end > last {
            self.write_partial(&buf[at(last)..], last, flags)?;
        }
        Ok(())
    }

    /// Write zeroes over any range: whole blocks with `WRITE_ZEROES` (`flags`), partial blocks
    /// by read-modify-write.
    pub(super) fn zero_any(&self, offset: u64, length: u64, flags: u16) -> Result<()> {
        let end = offset + length;
        let (first, last) = self.split(offset, end);
        if self.align() == 1 || (first == offset && last == end) {
            return self.zero_requests(offset, length, flags);
        }
        if last > first {
            self.zero_requests(first, last - first, flags)?;
        }
        let _g = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
        if first > offset {
            self.write_partial(&vec![0u8; (first - offset) as usize], offset, 0)?;
        }
        if end > last {
            self.write_partial(&vec![0u8; (end - last) as usize], last, 0)?;
        }
        Ok(())
    }

    /// The whole blocks inside `[offset, offset+length)` (for trim, a hint).
    pub(super) fn inner_blocks(&self, offset: u64, length: u64) -> (u64, u64) {
        let (first, last) = self.split(offset, offset + length);
        (first, last - first)
    }

    /// Block status from the start of the block holding `offset`, made relative to `offset`.
    pub(super) fn block_status_any(
        &self,
        ctx: u32,
        offset: u64,
        length: u64,
    ) -> Result<Option<(u64, u32)>> {
        let a = self.align();
        let start = offset / a * a;
        let skip = offset - start;
        let want = length.saturating_add(skip).div_ceil(a).saturating_mul(a);
        match self.block_status(ctx, start, want)? {
            Some((len, flags)) if len > skip => Ok(Some(((len - skip).min(length), flags))),
            // An extent shorter than a block: report the rest of the block as it.
            Some((_, flags)) => Ok(Some(((a - skip).min(length).max(1), flags))),
            None => Ok(None),
        }
    }
}
