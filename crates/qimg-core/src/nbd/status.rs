//! Block status with look-ahead. A read-only open asks the server for the status of a whole
//! window ([`AHEAD`] bytes, without `NBD_CMD_FLAG_REQ_ONE`) and answers the following queries
//! inside it from the extents it got, for every negotiated context at once: a convert asks
//! about every chunk, so this saves a round trip per chunk. A writable open asks every time
//! (its writes change the answers), one extent per request as before.
use super::*;

/// Bytes of block status asked for at once by a read-only open.
pub const AHEAD: u64 = 256 << 20;

/// Windows kept per storage (the workers of a convert query around a common frontier).
const WINDOWS: usize = 8;

/// Extents kept per window (bounds the memory a server's descriptors take; a window with more
/// ends early, and the next query past it asks again).
const MAX_EXTENTS: usize = 1 << 16;

/// The extents of one context over `[start, end)`, in order: (start, end, flags).
#[derive(Debug)]
pub(super) struct Window {
    ctx: u32,
    start: u64,
    end: u64,
    extents: Vec<(u64, u64, u32)>,
}

impl Window {
    /// The extent holding `at`, as (bytes from `at` to its end, flags).
    fn lookup(&self, ctx: u32, at: u64) -> Option<(u64, u32)> {
        if self.ctx != ctx || at < self.start || at >= self.end {
            return None;
        }
        let i = self.extents.partition_point(|e| e.1 <= at);
        let &(s, e, f) = self.extents.get(i)?;
        (s <= at).then_some((e - at, f))
    }
}

impl NbdStorage {
    /// Block status of the run at `offset` in context `ctx`: (length, flags) of the first extent.
    pub(super) fn block_status(
        &self,
        ctx: u32,
        offset: u64,
        length: u64,
    ) -> Result<Option<(u64, u32)>> {
        let left = self.export.size.saturating_sub(offset);
        let n = length.min(left).min(1 << 30);
        if n == 0 {
            return Ok(None);
        }
        if !self.read_only {
            let p = self.call(CMD_BLOCK_STATUS, CMDF_REQ_ONE, offset, n as u32, &[])?;
            return match p.status.iter().find(|d| d.0 == ctx) {
                Some(&(_, len, flags)) => Ok(Some(((len as u64).min(n), flags))),
                None => Err(self.no_descriptor()),
            };
        }
        if let Some((len, flags)) = self.cached_status(ctx, offset) {
            return Ok(Some((len.min(n), flags)));
        }
        // The window ends on a block boundary (or at the end of the export).
        let a = (self.export.min_block as u64).max(1);
        let mut want = n.max(AHEAD.min(left)).min(1 << 30);
        if want < left {
            want = (want / a * a).max(n);
        }
        let p = self.call(CMD_BLOCK_STATUS, 0, offset, want as u32, &[])?;
        let mut fresh: Vec<Window> = Vec::new();
        for &(c, len, flags) in &p.status {
            let w = match fresh.iter_mut().find(|w| w.ctx == c) {
                Some(w) => w,
                None => {
                    fresh.push(Window {
                        ctx: c,
                        start: offset,
                        end: offset,
                        extents: Vec::new(),
                    });
                    fresh.last_mut().expect("pushed")
                }
            };
            // Past the window asked for (the last extent may run on): clipped.
            let stop = offset + want;
            if w.end >= stop || w.extents.len() >= MAX_EXTENTS {
                continue;
            }
            let e = (w.end + len as u64).min(stop);
            w.extents.push((w.end, e, flags));
            w.end = e;
        }
        let hit = fresh
            .iter()
            .find_map(|w| w.lookup(ctx, offset))
            .ok_or_else(|| self.no_descriptor())?;
        let mut cache = self.status_cache.lock().unwrap_or_else(|p| p.into_inner());
        for w in fresh {
            if cache.len() >= WINDOWS {
                cache.remove(0);
            }
            cache.push(w);
        }
        Ok(Some((hit.0.min(n), hit.1)))
    }

    fn cached_status(&self, ctx: u32, offset: u64) -> Option<(u64, u32)> {
        let cache = self.status_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.iter().rev().find_map(|w| w.lookup(ctx, offset))
    }

    fn no_descriptor(&self) -> Error {
        Error::corrupt("NBD block status reply without a descriptor").with_path(&self.name)
    }
}
