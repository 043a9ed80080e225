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
//! The header cluster is rewritten by [`super::header_write`] (every other extension kept, the
//! backing-format extension replaced) after the image's data and metadata are flushed.
use super::driver::Qcow2Driver;
use super::header::{EXT_BACKING_FORMAT, MAX_BACKING_NAME};
use super::header_write::BackingName;
use super::mapping::{decode_l1, Cluster};
use qimg_core::{Error, Result};

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
        let fmt = name.and(format).map(str::as_bytes);
        let (off, len) = self.rewrite_header_cluster(
            &st,
            &[(EXT_BACKING_FORMAT, fmt)],
            BackingName::Set(name),
            |_| {},
        )?;
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
