//! Operations on a qcow2 image's relation to its backing file: changing the reference
//! (`rebase`) and emptying the image after its data moved down (`commit`).
//!
//! The backing file name is stored in the header cluster after the header extensions, and its
//! format in the backing-format extension (docs/interop/qcow2.txt):
//! ```text
//!   header (72 bytes for v2, header_length for v3)
//!   extensions: u32 type, u32 length, data padded to 8 bytes … type 0 (end)
//!   backing file name (backing_file_offset, backing_file_size; no NUL), all in cluster 0
//! ```
//! The rewrite keeps the fixed header bytes and every other extension as found on disk (unknown
//! ones included), replaces the backing-format extension, and writes the header cluster's used
//! bytes in one write after the image's data and metadata are flushed.
use super::driver::Qcow2Driver;
use super::header::{self, EXT_BACKING_FORMAT, MAX_BACKING_NAME};
use super::mapping::{decode_l1, Cluster};
use qimg_core::{Error, Result};

/// The extensions of a header cluster as stored: (type, data), in order, without the end marker.
fn raw_extensions(first: &[u8], start: usize, limit: usize) -> Result<Vec<(u32, Vec<u8>)>> {
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
    /// Point the image at another backing file (`None`: no backing file), with its format.
    /// The guest-visible contents are the caller's business (`rebase` copies first).
    pub fn set_backing_reference(&self, name: Option<&str>, format: Option<&str>) -> Result<()> {
        if let Some(n) = name {
            if n.is_empty() || n.len() > MAX_BACKING_NAME as usize {
                return Err(Error::invalid(format!(
                    "Backing file name must be 1 to {MAX_BACKING_NAME} bytes"
                )));
            }
        }
        let mut st = self.lock()?;
        // Everything written so far must be durable before the image reads through another file.
        self.flush_locked(&mut st)?;
        let cs = self.cs as usize;
        let file_size = self.storage.size()?;
        let mut first = vec![0u8; cs.min(file_size as usize)];
        self.storage.read_at(&mut first, 0)?;
        let h = &st.header;
        let fixed_len = if h.version >= 3 {
            h.header_length as usize
        } else {
            72
        };
        let limit = match h.backing_file_offset {
            0 => first.len(),
            b => (b as usize).min(first.len()),
        };
        let mut exts = raw_extensions(&first, fixed_len, limit)?;
        exts.retain(|(ty, _)| *ty != EXT_BACKING_FORMAT);
        if let (Some(_), Some(f)) = (name, format) {
            exts.insert(0, (EXT_BACKING_FORMAT, f.as_bytes().to_vec()));
        }
        let mut out = first[..fixed_len].to_vec();
        for (ty, data) in &exts {
            header::push_extension(&mut out, *ty, data);
        }
        out.extend_from_slice(&[0u8; 8]);
        let (off, len) = match name {
            Some(n) => {
                let off = out.len() as u64;
                out.extend_from_slice(n.as_bytes());
                (off, n.len() as u32)
            }
            None => (0, 0),
        };
        if out.len() > cs {
            return Err(Error::invalid(
                "Backing file name and header extensions do not fit in the header cluster",
            ));
        }
        out[8..16].copy_from_slice(&off.to_be_bytes());
        out[16..20].copy_from_slice(&len.to_be_bytes());
        self.storage.write_at(&out, 0)?;
        self.storage.flush()?;
        st.header.backing_file_offset = off;
        st.header.backing_file_size = len;
        st.header.backing_file = name.map(str::to_string);
        st.header.backing_format = name.and(format).map(str::to_string);
        Ok(())
    }

    /// `commit`'s last step: make every guest cluster unallocated, so the image reads through to
    /// its backing file (QEMU's make_empty). Data clusters are freed; L2 tables stay.
    pub fn make_empty_clusters(&self) -> Result<()> {
        let mut st = self.lock()?;
        let l2e = self.cs / 8;
        let clusters = st.header.size.div_ceil(self.cs);
        for l1i in 0..st.l1.len() {
            if decode_l1(st.l1[l1i], self.cluster_bits)? == 0 {
                continue;
            }
            let first = l1i as u64 * l2e;
            for gc in first..(first + l2e).min(clusters) {
                if !matches!(self.lookup(&mut st, gc)?, Cluster::Unallocated) {
                    self.clear_entry(&mut st, gc)?;
                }
            }
        }
        self.flush_locked(&mut st)
    }
}
