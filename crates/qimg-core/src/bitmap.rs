//! Persistent dirty bitmaps as seen through [`crate::BlockDriver`]: what a format lists, the
//! actions `qemu-img bitmap` applies, and a bitmap's bits as they move between images.

/// One persistent bitmap, as `qemu-img info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapInfo {
    /// The bitmap's name.
    pub name: String,
    /// Bytes of guest data per bit.
    pub granularity: u64,
    /// Enabled: tracks writes while the image is open (qcow2's `auto` flag).
    pub auto: bool,
    /// Inconsistent: the image was not closed cleanly while the bitmap was in use.
    pub in_use: bool,
}

/// A bitmap's contents: bit `i` covers guest bytes `[i*granularity, (i+1)*granularity)`, stored
/// least significant bit first in each byte (qcow2's on-disk order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapData {
    /// Bytes of guest data per bit.
    pub granularity: u64,
    /// Guest size the bitmap covers.
    pub size: u64,
    /// The bits, `ceil(ceil(size / granularity) / 8)` bytes.
    pub bits: Vec<u8>,
}

impl BitmapData {
    /// An all-clear bitmap for `size` guest bytes.
    pub fn new(granularity: u64, size: u64) -> Self {
        let n = size.div_ceil(granularity).div_ceil(8) as usize;
        BitmapData {
            granularity,
            size,
            bits: vec![0; n],
        }
    }

    /// True if bit `i` is set.
    pub fn get(&self, i: u64) -> bool {
        self.bits
            .get((i / 8) as usize)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Mark guest bytes `[offset, offset+len)` dirty.
    pub fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let end = (offset + len).min(self.size);
        for i in offset / self.granularity..=(end - 1) / self.granularity {
            if let Some(b) = self.bits.get_mut((i / 8) as usize) {
                *b |= 1 << (i % 8);
            }
        }
    }

    /// The dirty guest ranges `(offset, length)`, merged and clipped to the size.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (bi, &b) in self.bits.iter().enumerate() {
            if b == 0 {
                continue;
            }
            for k in 0..8 {
                if b & (1 << k) == 0 {
                    continue;
                }
                let start = (bi as u64 * 8 + k) * self.granularity;
                if start >= self.size {
                    break;
                }
                let len = self.granularity.min(self.size - start);
                match out.last_mut() {
                    Some((s, l)) if *s + *l == start => *l += len,
                    _ => out.push((start, len)),
                }
            }
        }
        out
    }
}

/// One `qemu-img bitmap` action, applied in order.
#[derive(Debug, Clone)]
pub enum BitmapAction {
    /// `--add [-g granularity]`: a new, enabled, empty bitmap.
    Add {
        /// Name of the new bitmap.
        name: String,
        /// Bytes per bit; `None` for the format's default.
        granularity: Option<u64>,
    },
    /// `--remove`.
    Remove(String),
    /// `--clear`: reset every bit.
    Clear(String),
    /// `--enable`: track writes.
    Enable(String),
    /// `--disable`: stop tracking writes.
    Disable(String),
    /// `--merge`: set every bit set in `source` (any granularity, same guest size).
    Merge {
        /// Destination bitmap.
        name: String,
        /// The source bitmap's contents.
        source: BitmapData,
    },
}

impl BitmapAction {
    /// qemu-img's name for the action (`add`, `remove`, …) and the bitmap it names.
    pub fn describe(&self) -> (&'static str, &str) {
        match self {
            BitmapAction::Add { name, .. } => ("add", name),
            BitmapAction::Remove(n) => ("remove", n),
            BitmapAction::Clear(n) => ("clear", n),
            BitmapAction::Enable(n) => ("enable", n),
            BitmapAction::Disable(n) => ("disable", n),
            BitmapAction::Merge { name, .. } => ("merge", name),
        }
    }
}
