//! Fused AES-XTS over the `aes` 0.9 crate's backends: for each run of `ParBlocks` (64 blocks
//! with VAES-512, 30 with VAES-256, 8 with AES-NI) the tweaks are generated in registers, XORed
//! into a stack copy of the data, the run is encrypted or decrypted in one pipelined backend call
//! and XORed with the same tweaks on the way back into the buffer. Everything between the loads
//! and the stores stays in L1, where the generic path makes three passes over a 64 KiB batch.
//!
//! The closures run inside the backend's `#[target_feature]` function (the `aes` crate selects
//! VAES-512, VAES-256 or AES-NI at run time), so the XOR and doubling code is compiled for the
//! same instruction set as the cipher rounds.
use cipher05::array::{Array, ArraySize};
use cipher05::{
    consts::U16, BlockCipherDecBackend, BlockCipherDecClosure, BlockCipherEncBackend,
    BlockCipherEncClosure, BlockSizeUser, ParBlocks, ParBlocksSizeUser,
};

/// One 16-byte cipher block.
type Blk = Array<u8, U16>;

/// Blocks per window: 4 KiB, whole sectors (sectors are 512–4096 bytes, powers of two), so
/// the data and its tweaks stay in L1 between the XOR, cipher and XOR passes.
const WIN: usize = 256;
/// Most sectors in one window (512-byte sectors).
const MAX_LANES: usize = WIN / 32;

/// One fused XTS pass over whole sectors of `data`: `t0` holds each sector's first tweak
/// (16 bytes per sector, already encrypted with the tweak key).
pub(crate) struct XtsPass<'a> {
    /// Whole sectors, processed in place.
    pub data: &'a mut [u8],
    /// The encrypted IV (first tweak) of each sector, 16 bytes each.
    pub t0: &'a [u8],
    /// Blocks (16 bytes) per sector.
    pub blocks_per_sector: usize,
}

/// Multiply a tweak by α in GF(2^128) (IEEE 1619 little-endian convention).
#[inline(always)]
fn double(t: u128) -> u128 {
    (t << 1) ^ (((t as i128) >> 127) as u128 & 0x87)
}

#[inline(always)]
fn load(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    u128::from_le_bytes(a)
}

/// View whole blocks of `data` as cipher blocks.
#[inline(always)]
fn as_blocks(data: &mut [u8]) -> &mut [Blk] {
    let n = data.len() / 16;
    // SAFETY: `Array<u8, U16>` is `repr(transparent)` over `[u8; 16]` (size 16, alignment 1),
    // so n of them occupy the first n*16 bytes of `data`; the slice reborrows `data` mutably for
    // the same lifetime.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), n) }
}

/// `a ^= b` over equal lengths (vectorized by the compiler at the caller's target features).
#[inline(always)]
fn xor_in(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// The loop shared by encryption and decryption: `par` / `tail` run the block cipher on a full
/// run of `P` blocks or on fewer. Per 4 KiB window: tweaks of its sectors (independent doubling
/// chains interleaved, one per sector), XOR, cipher runs, XOR.
#[inline(always)]
fn run<P: ArraySize>(
    pass: XtsPass<'_>,
    mut par: impl FnMut(&mut Array<Blk, P>),
    mut tail: impl FnMut(&mut [Blk]),
) {
    let XtsPass {
        data,
        t0,
        blocks_per_sector: bps,
    } = pass;
    if bps == 0 || !WIN.is_multiple_of(bps) || WIN / bps > MAX_LANES {
        debug_assert!(false, "unsupported XTS sector of {bps} blocks");
        return;
    }
    let per_win = WIN / bps;
    let mut tw = [0u8; 16 * WIN];
    for (win, t0w) in data.chunks_mut(16 * WIN).zip(t0.chunks(16 * per_win)) {
        let nsec = (win.len() / (16 * bps)).min(t0w.len() / 16);
        let mut lanes = [0u128; MAX_LANES];
        for (l, t) in lanes.iter_mut().zip(t0w.chunks_exact(16)) {
            *l = load(t);
        }
        let lanes = &mut lanes[..nsec];
        for j in 0..bps {
            for (s, t) in lanes.iter_mut().enumerate() {
                let at = 16 * (s * bps + j);
                tw[at..at + 16].copy_from_slice(&t.to_le_bytes());
                *t = double(*t);
            }
        }
        let len = 16 * bps * nsec;
        let win = &mut win[..len];
        let tw = &tw[..len];
        xor_in(win, tw);
        let (runs, rest) = Array::<Blk, P>::slice_as_chunks_mut(as_blocks(win));
        for r in runs {
            par(r);
        }
        if !rest.is_empty() {
            tail(rest);
        }
        xor_in(win, tw);
    }
}

/// Encryption: `XtsEnc(pass)` given to `encrypt_with_backend` of the data-key cipher.
pub(crate) struct XtsEnc<'a>(pub XtsPass<'a>);
/// Decryption: `XtsDec(pass)` given to `decrypt_with_backend` of the data-key cipher.
pub(crate) struct XtsDec<'a>(pub XtsPass<'a>);

impl BlockSizeUser for XtsEnc<'_> {
    type BlockSize = U16;
}
impl BlockSizeUser for XtsDec<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for XtsEnc<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        run::<<B as ParBlocksSizeUser>::ParBlocksSize>(
            self.0,
            |p: &mut ParBlocks<B>| backend.encrypt_par_blocks_inplace(p),
            |t| backend.encrypt_tail_blocks_inplace(t),
        );
    }
}

impl BlockCipherDecClosure for XtsDec<'_> {
    #[inline(always)]
    fn call<B: BlockCipherDecBackend<BlockSize = U16>>(self, backend: &B) {
        run::<<B as ParBlocksSizeUser>::ParBlocksSize>(
            self.0,
            |p: &mut ParBlocks<B>| backend.decrypt_par_blocks_inplace(p),
            |t| backend.decrypt_tail_blocks_inplace(t),
        );
    }
}
