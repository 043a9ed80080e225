//! Zero detection: the hot loop of `convert -S` and of write-zeroes detection.

/// True if every byte of `buf` is zero. Scans eight bytes at a time.
pub fn is_zero(buf: &[u8]) -> bool {
    let (head, body, tail) = {
        // SAFETY: every bit pattern is a valid u64, and align_to only reinterprets the aligned
        // middle of the slice; head and tail keep the unaligned bytes.
        unsafe { buf.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && body
            .chunks(8)
            .all(|c| c.iter().fold(0u64, |a, &w| a | w) == 0)
}

/// Length of the leading run of `buf` that is all-zero (`zero == true`) or not all-zero, in
/// units of `granule` bytes (the last granule may be short). Used to split a buffer into
/// zero and data runs of at least `granule` bytes, as `qemu-img convert -S` does.
pub fn run_length(buf: &[u8], granule: usize) -> (bool, usize) {
    let granule = granule.max(1);
    if buf.is_empty() {
        return (false, 0);
    }
    let first = is_zero(&buf[..granule.min(buf.len())]);
    let mut pos = 0;
    while pos < buf.len() {
        let end = (pos + granule).min(buf.len());
        if is_zero(&buf[pos..end]) != first {
            break;
        }
        pos = end;
    }
    (first, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_zero_and_nonzero_at_every_position() {
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 4096] {
            let mut v = vec![0u8; len + 3];
            for off in 0..3 {
                assert!(is_zero(&v[off..off + len]));
                for i in 0..len {
                    v[off + i] = 1;
                    assert!(!is_zero(&v[off..off + len]), "len {len} off {off} i {i}");
                    v[off + i] = 0;
                }
            }
        }
    }

    #[test]
    fn splits_runs_by_granule() {
        let mut v = vec![0u8; 16384];
        v[8192] = 5;
        assert_eq!(run_length(&v, 4096), (true, 8192));
        assert_eq!(run_length(&v[8192..], 4096), (false, 4096));
        assert_eq!(run_length(&v[12288..], 4096), (true, 4096));
    }
}
