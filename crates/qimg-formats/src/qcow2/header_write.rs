//! Rewriting the header cluster in place: the one routine behind changing the backing file
//! (`rebase`) and storing bitmaps (the bitmaps extension and autoclear bit).
//!
//! Layout of cluster 0 (docs/interop/qcow2.txt):
//! ```text
//!   fixed header        72 bytes (v2) or header_length bytes (v3)
//!   extensions          u32 type, u32 length, data padded to 8 bytes, …, type 0 (end)
//!   backing file name   at backing_file_offset, backing_file_size bytes, no NUL
//! ```
//! The fixed fields are kept as found on disk (with a caller's patch applied) and every
//! extension is kept in order, unknown ones included, except the types being replaced; the
//! replacements follow them. The used bytes are written in one write, then flushed: callers make
//! whatever the new header points at durable first.
use super::driver::{Qcow2Driver, State};
use super::header;
use qimg_core::{Error, Result};

/// The backing file name the rewritten header carries.
pub(super) enum BackingName<'a> {
    /// The name stored now.
    Keep,
    /// This name, or none.
    Set(Option<&'a str>),
}

/// The extensions of a header cluster as stored: (type, data), in order, without the end marker.
pub(super) fn raw_extensions(
    first: &[u8],
    start: usize,
    limit: usize,
) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut off = start;
    while off + 8 <= limit {
        let ty = u32::from_be_bytes(first[off..off + 4].try_into().unwrap_or([0; 4]));
        let len = u32::from_be_bytes(first[off + 4..off + 8].try_into().unwrap_or([0; 4])) as usize;
        if ty == 0 {
            break;
        }
        let data = off + 8;
        if len > limit.saturating_sub(data) || out.len() >= 1024 {
            return Err(Error::corrupt(format!(
                "Header extension {ty:#x} overflows the header cluster"
            )));
        }
        out.push((ty, first[data..data + len].to_vec()));
        off = data + len.div_ceil(8) * 8;
    }
    Ok(out)
}

impl Qcow2Driver {
    /// Rewrite cluster 0: extensions of the types in `replace` are dropped and the given bodies
    /// (`Some`) appended; `patch` may change the fixed fields. Returns the new backing file
    /// offset and length, which the caller records in its in-memory header.
    pub(super) fn rewrite_header_cluster(
        &self,
        st: &State,
        replace: &[(u32, Option<&[u8]>)],
        backing: BackingName<'_>,
        patch: impl FnOnce(&mut [u8]),
    ) -> Result<(u64, u32)> {
        let cs = self.cs as usize;
        let mut first = vec![0u8; cs.min(self.storage.size()? as usize)];
        self.storage.read_at(&mut first, 0)?;
        let h = &st.header;
        let fixed = if h.version >= 3 {
            h.header_length as usize
        } else {
            72
        };
        let limit = match h.backing_file_offset {
            0 => first.len(),
            b => (b as usize).min(first.len()),
        };
        let mut out = first[..fixed.min(first.len())].to_vec();
        for (ty, data) in raw_extensions(&first, fixed, limit)? {
            if !replace.iter().any(|(t, _)| *t == ty) {
                header::push_extension(&mut out, ty, &data);
            }
        }
        for (ty, body) in replace {
            if let Some(b) = body {
                header::push_extension(&mut out, *ty, b);
            }
        }
        out.extend_from_slice(&[0u8; 8]);
        patch(&mut out);
        let name: Option<Vec<u8>> = match backing {
            BackingName::Set(n) => n.map(|n| n.as_bytes().to_vec()),
            BackingName::Keep if h.backing_file_offset != 0 => {
                let (b, n) = (h.backing_file_offset as usize, h.backing_file_size as usize);
                Some(first.get(b..b + n).unwrap_or_default().to_vec())
            }
            BackingName::Keep => None,
        };
        let (off, len) = match name {
            Some(n) => {
                let off = out.len() as u64;
                out.extend_from_slice(&n);
                (off, n.len() as u32)
            }
            None => (0, 0),
        };
        if out.len() > cs {
            return Err(Error::invalid(
                "Header extensions and backing file name do not fit in the header cluster",
            ));
        }
        out[8..16].copy_from_slice(&off.to_be_bytes());
        out[16..20].copy_from_slice(&len.to_be_bytes());
        self.storage.write_at(&out, 0)?;
        self.storage.flush()?;
        Ok((off, len))
    }
}
