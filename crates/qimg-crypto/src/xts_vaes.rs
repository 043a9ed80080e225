//! AES-XTS with VAES on x86-64: with AVX-512F, 32 blocks (one 512-byte sector) per step in eight
//! ZMM registers, the tweaks advanced four blocks at a time (T·α⁴ per 128-bit lane); with AVX2
//! only (e.g. Zen 3), 16 blocks per step in eight YMM registers (T·α²). Data is loaded once,
//! XORed, run through the rounds, XORed and stored once.
//!
//! Why not only the `aes` crate: its VAES-512 backend is used for everything else, but its batch
//! load goes through a non-inlined `Array::from_fn` and a copy, which costs about a quarter of the
//! throughput on XTS's short runs; here the round keys are expanded with AES-NI's
//! `aeskeygenassist` (the standard AES-128/AES-256 schedule) and kept broadcast in registers.
//! AES-192 and CPUs without VAES use [`crate::xts_fused`] over the `aes` crate.
//! Checked against the `aes` crate path and RustCrypto's `xts-mode` in the tests.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Expanded AES-128 or AES-256 keys for VAES-512 XTS (data key only; tweaks are encrypted by
/// the caller).
pub(crate) struct VaesXts {
    /// Encryption round keys (11 or 15).
    ek: [__m128i; 15],
    /// Decryption round keys of the equivalent inverse cipher.
    dk: [__m128i; 15],
    /// 10 or 14.
    rounds: usize,
    /// AVX-512F present: 512-bit registers (4 blocks each); else AVX2 with VAES (2 blocks each).
    wide: bool,
}

// SAFETY: the struct holds plain 128-bit values (round keys), no pointers.
unsafe impl Send for VaesXts {}
// SAFETY: as above; shared access only reads the round keys.
unsafe impl Sync for VaesXts {}

impl Drop for VaesXts {
    fn drop(&mut self) {
        // SAFETY: `self.ek` / `self.dk` are valid, exclusive places of their type; volatile
        // writes keep the wipe of the round keys from being optimized away.
        unsafe {
            std::ptr::write_volatile(&mut self.ek, [_mm_setzero_si128(); 15]);
            std::ptr::write_volatile(&mut self.dk, [_mm_setzero_si128(); 15]);
        }
    }
}

/// `x ^ x<<32 ^ x<<64 ^ x<<96`: the word-prefix XOR of the key schedule.
#[inline]
#[target_feature(enable = "sse2")]
fn prefix_xor(mut x: __m128i) -> __m128i {
    let mut t = _mm_slli_si128(x, 4);
    x = _mm_xor_si128(x, t);
    t = _mm_slli_si128(t, 4);
    x = _mm_xor_si128(x, t);
    t = _mm_slli_si128(t, 4);
    _mm_xor_si128(x, t)
}

macro_rules! round128 {
    ($ek:ident, $i:expr, $rcon:expr) => {
        let a = _mm_shuffle_epi32(_mm_aeskeygenassist_si128($ek[$i - 1], $rcon), 0xff);
        $ek[$i] = _mm_xor_si128(prefix_xor($ek[$i - 1]), a);
    };
}

macro_rules! round256 {
    ($ek:ident, $i:expr, $rcon:expr) => {
        let a = _mm_shuffle_epi32(_mm_aeskeygenassist_si128($ek[$i - 1], $rcon), 0xff);
        $ek[$i] = _mm_xor_si128(prefix_xor($ek[$i - 2]), a);
        if $i + 1 < 15 {
            let b = _mm_shuffle_epi32(_mm_aeskeygenassist_si128($ek[$i], 0), 0xaa);
            $ek[$i + 1] = _mm_xor_si128(prefix_xor($ek[$i - 1]), b);
        }
    };
}

#[target_feature(enable = "aes,sse2")]
fn expand(key: &[u8]) -> VaesXts {
    let mut ek = [_mm_setzero_si128(); 15];
    // SAFETY: unaligned 16-byte loads from `key`, whose length (16 or 32) the caller checked.
    let load = |o: usize| unsafe { _mm_loadu_si128(key.as_ptr().add(o).cast()) };
    let rounds = if key.len() == 16 {
        ek[0] = load(0);
        round128!(ek, 1, 0x01);
        round128!(ek, 2, 0x02);
        round128!(ek, 3, 0x04);
        round128!(ek, 4, 0x08);
        round128!(ek, 5, 0x10);
        round128!(ek, 6, 0x20);
        round128!(ek, 7, 0x40);
        round128!(ek, 8, 0x80);
        round128!(ek, 9, 0x1b);
        round128!(ek, 10, 0x36);
        10
    } else {
        ek[0] = load(0);
        ek[1] = load(16);
        round256!(ek, 2, 0x01);
        round256!(ek, 4, 0x02);
        round256!(ek, 6, 0x04);
        round256!(ek, 8, 0x08);
        round256!(ek, 10, 0x10);
        round256!(ek, 12, 0x20);
        round256!(ek, 14, 0x40);
        14
    };
    let mut dk = [_mm_setzero_si128(); 15];
    dk[0] = ek[rounds];
    for i in 1..rounds {
        dk[i] = _mm_aesimc_si128(ek[rounds - i]);
    }
    dk[rounds] = ek[0];
    VaesXts {
        ek,
        dk,
        rounds,
        wide: false,
    }
}

/// Multiply each 128-bit lane by α⁴ in GF(2^128) (IEEE 1619: little-endian, x^128 = x^7+x^2+x+1).
#[inline]
#[target_feature(enable = "avx512f")]
fn mul_a4(t: __m512i) -> __m512i {
    let carries = _mm512_srli_epi64(t, 60);
    let shifted = _mm512_slli_epi64(t, 4);
    // The low qword's top 4 bits move into the high qword.
    let up = _mm512_unpacklo_epi64(_mm512_setzero_si512(), carries);
    // The high qword's top 4 bits c wrap around as c·(x^7+x^2+x+1) (carry-less) into the low one.
    let c = _mm512_unpackhi_epi64(carries, _mm512_setzero_si512());
    let red = _mm512_xor_si512(
        _mm512_xor_si512(c, _mm512_slli_epi64(c, 1)),
        _mm512_xor_si512(_mm512_slli_epi64(c, 2), _mm512_slli_epi64(c, 7)),
    );
    _mm512_xor_si512(_mm512_xor_si512(shifted, up), red)
}

/// Multiply each 128-bit lane by α² (as [`mul_a4`], on 256-bit registers).
#[inline]
#[target_feature(enable = "avx2")]
fn mul_a2(t: __m256i) -> __m256i {
    let carries = _mm256_srli_epi64(t, 62);
    let shifted = _mm256_slli_epi64(t, 2);
    let up = _mm256_unpacklo_epi64(_mm256_setzero_si256(), carries);
    let c = _mm256_unpackhi_epi64(carries, _mm256_setzero_si256());
    let red = _mm256_xor_si256(
        _mm256_xor_si256(c, _mm256_slli_epi64(c, 1)),
        _mm256_xor_si256(_mm256_slli_epi64(c, 2), _mm256_slli_epi64(c, 7)),
    );
    _mm256_xor_si256(_mm256_xor_si256(shifted, up), red)
}

/// Multiply by α (one doubling), on a scalar tweak.
#[inline(always)]
fn double(t: u128) -> u128 {
    (t << 1) ^ (((t as i128) >> 127) as u128 & 0x87)
}

impl VaesXts {
    /// Expanded keys for a 16- or 32-byte AES key, if this CPU has AES-NI, VAES and AVX-512F
    /// or AVX2; `None` otherwise (or for AES-192), and the caller uses the `aes` crate path.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        if !(key.len() == 16 || key.len() == 32)
            || !std::arch::is_x86_feature_detected!("aes")
            || !std::arch::is_x86_feature_detected!("vaes")
        {
            return None;
        }
        let wide = std::arch::is_x86_feature_detected!("avx512f");
        if !wide && !std::arch::is_x86_feature_detected!("avx2") {
            return None;
        }
        // SAFETY: AES-NI (and SSE2, baseline on x86-64) were detected above.
        let mut x = unsafe { expand(key) };
        x.wide = wide;
        Some(x)
    }

    /// Use the 256-bit (AVX2) kernel even where AVX-512F is present: for tests and benchmarks.
    pub(crate) fn narrow(&mut self) {
        self.wide = false;
    }

    /// Which kernel runs: `"VAES-512"` or `"VAES-256"`.
    pub(crate) fn kernel(&self) -> &'static str {
        if self.wide {
            "VAES-512"
        } else {
            "VAES-256"
        }
    }

    /// XTS over whole sectors of `data` (`bps` blocks each, a multiple of 32), in place; `t0`
    /// holds each sector's encrypted first tweak (16 bytes per sector). Returns false (doing
    /// nothing) when the shapes do not fit, and the caller takes another path.
    pub(crate) fn xts(&self, t0: &[u8], data: &mut [u8], bps: usize, encrypt: bool) -> bool {
        if bps == 0 || !bps.is_multiple_of(32) || data.len() != t0.len() * bps {
            return false;
        }
        if self.wide {
            // SAFETY: `wide` is only set when AES-NI, AVX-512F and VAES were detected.
            unsafe { self.xts_inner(t0, data, bps, encrypt) };
        } else {
            // SAFETY: `new` only returns a value when AES-NI, VAES and (AVX-512F or) AVX2 were
            // detected; AVX-512F implies AVX2.
            unsafe { self.xts_inner256(t0, data, bps, encrypt) };
        }
        true
    }

    /// The AVX2 variant: 256-bit registers of 2 blocks, 8 of them (16 blocks) per step, the
    /// round keys read from a broadcast table in L1 (AVX2 has 16 vector registers).
    #[target_feature(enable = "aes,avx2,vaes")]
    fn xts_inner256(&self, t0: &[u8], data: &mut [u8], bps: usize, encrypt: bool) {
        let keys = if encrypt { &self.ek } else { &self.dk };
        let mut k = [_mm256_setzero_si256(); 15];
        for (b, &x) in k.iter_mut().zip(keys.iter()).take(self.rounds + 1) {
            *b = _mm256_broadcastsi128_si256(x);
        }
        let r = self.rounds;
        for (sector, t) in data.chunks_exact_mut(16 * bps).zip(t0.chunks_exact(16)) {
            let mut a = [0u8; 16];
            a.copy_from_slice(t);
            let t1 = u128::from_le_bytes(a);
            let first = [t1, double(t1)];
            // SAFETY: `first` is 32 readable bytes.
            let mut tw = unsafe { _mm256_loadu_si256(first.as_ptr().cast()) };
            for run in sector.chunks_exact_mut(256) {
                let p = run.as_mut_ptr().cast::<__m256i>();
                let mut tws = [_mm256_setzero_si256(); 8];
                let mut x = [_mm256_setzero_si256(); 8];
                for i in 0..8 {
                    tws[i] = tw;
                    tw = mul_a2(tw);
                    // SAFETY: `run` is 256 bytes, so the 8 unaligned 32-byte loads stay inside.
                    let d = unsafe { _mm256_loadu_si256(p.add(i)) };
                    x[i] = _mm256_xor_si256(_mm256_xor_si256(d, tws[i]), k[0]);
                }
                if encrypt {
                    for key in &k[1..r] {
                        for v in x.iter_mut() {
                            *v = _mm256_aesenc_epi128(*v, *key);
                        }
                    }
                    for v in x.iter_mut() {
                        *v = _mm256_aesenclast_epi128(*v, k[r]);
                    }
                } else {
                    for key in &k[1..r] {
                        for v in x.iter_mut() {
                            *v = _mm256_aesdec_epi128(*v, *key);
                        }
                    }
                    for v in x.iter_mut() {
                        *v = _mm256_aesdeclast_epi128(*v, k[r]);
                    }
                }
                for i in 0..8 {
                    // SAFETY: as for the loads: 8 unaligned 32-byte stores inside `run`.
                    unsafe { _mm256_storeu_si256(p.add(i), _mm256_xor_si256(x[i], tws[i])) };
                }
            }
        }
    }

    #[target_feature(enable = "aes,avx512f,vaes")]
    fn xts_inner(&self, t0: &[u8], data: &mut [u8], bps: usize, encrypt: bool) {
        let keys = if encrypt { &self.ek } else { &self.dk };
        let mut k = [_mm512_setzero_si512(); 15];
        for (b, &x) in k.iter_mut().zip(keys.iter()).take(self.rounds + 1) {
            *b = _mm512_broadcast_i32x4(x);
        }
        let r = self.rounds;
        for (sector, t) in data.chunks_exact_mut(16 * bps).zip(t0.chunks_exact(16)) {
            let mut a = [0u8; 16];
            a.copy_from_slice(t);
            let t1 = u128::from_le_bytes(a);
            let t2 = double(t1);
            let t3 = double(t2);
            let first = [t1, t2, t3, double(t3)];
            // SAFETY: `first` is 64 readable bytes.
            let mut tw = unsafe { _mm512_loadu_si512(first.as_ptr().cast()) };
            for run in sector.chunks_exact_mut(512) {
                let p = run.as_mut_ptr().cast::<__m512i>();
                let mut tws = [_mm512_setzero_si512(); 8];
                let mut x = [_mm512_setzero_si512(); 8];
                for i in 0..8 {
                    tws[i] = tw;
                    tw = mul_a4(tw);
                    // SAFETY: `run` is 512 bytes, so the 8 unaligned 64-byte loads stay inside.
                    let d = unsafe { _mm512_loadu_si512(p.add(i)) };
                    x[i] = _mm512_xor_si512(_mm512_xor_si512(d, tws[i]), k[0]);
                }
                if encrypt {
                    for key in &k[1..r] {
                        for v in x.iter_mut() {
                            *v = _mm512_aesenc_epi128(*v, *key);
                        }
                    }
                    for v in x.iter_mut() {
                        *v = _mm512_aesenclast_epi128(*v, k[r]);
                    }
                } else {
                    for key in &k[1..r] {
                        for v in x.iter_mut() {
                            *v = _mm512_aesdec_epi128(*v, *key);
                        }
                    }
                    for v in x.iter_mut() {
                        *v = _mm512_aesdeclast_epi128(*v, k[r]);
                    }
                }
                for i in 0..8 {
                    // SAFETY: as for the loads: 8 unaligned 64-byte stores inside `run`.
                    unsafe { _mm512_storeu_si512(p.add(i), _mm512_xor_si512(x[i], tws[i])) };
                }
            }
        }
    }
}
