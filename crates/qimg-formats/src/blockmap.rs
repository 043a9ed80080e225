//! Guest → host lookups through a flat table of fixed-size blocks (VDI's block map, VHD's BAT),
//! batched: one call turns a guest range into the fewest runs, merging blocks that are
//! contiguous on the host so a large read or write becomes one storage call.

/// A run of guest bytes with one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Guest byte offset.
    pub guest: u64,
    /// Length in bytes.
    pub len: u64,
    /// Host byte offset of the first byte, or `None` if the blocks are not allocated.
    pub host: Option<u64>,
}

/// Split `[offset, offset+len)` into runs, asking `block_host(index)` for the host offset of each
/// block's first byte (`None` = unallocated). Runs merge across blocks when the host offsets are
/// contiguous (or both unallocated).
pub fn runs(
    offset: u64,
    len: u64,
    block_size: u64,
    mut block_host: impl FnMut(u64) -> Option<u64>,
) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let idx = pos / block_size;
        let within = pos % block_size;
        let take = (block_size - within).min(end - pos);
        let host = block_host(idx).map(|h| h + within);
        if let Some(last) = out.last_mut() {
            let merge = match (last.host, host) {
                (None, None) => true,
                (Some(a), Some(b)) => a + last.len == b,
                _ => false,
            };
            if merge {
                last.len += take;
                pos += take;
                continue;
            }
        }
        out.push(Run {
            guest: pos,
            len: take,
            host,
        });
        pos += take;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_contiguous_blocks() {
        let map = [Some(0u64), Some(10), None, None, Some(40)];
        let r = runs(5, 45, 10, |i| map[i as usize]);
        assert_eq!(
            r,
            vec![
                Run {
                    guest: 5,
                    len: 15,
                    host: Some(5)
                },
                Run {
                    guest: 20,
                    len: 20,
                    host: None
                },
                Run {
                    guest: 40,
                    len: 10,
                    host: Some(40)
                },
            ]
        );
    }
}
