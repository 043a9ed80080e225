//! Whole-sector encryption: a [`SectorCipher`] encrypts or decrypts a buffer of consecutive
//! sectors in place, sector `n` of the buffer using the IV of sector `first + n`.
//!
//! The modes are written over the block ciphers' batched `encrypt_blocks` / `decrypt_blocks`
//! (the `aes` crate detects AES-NI at run time and then pipelines 8 blocks at a time), so XTS,
//! ECB, CTR and CBC decryption run at the block cipher's parallel speed; only CBC encryption is
//! serial by nature. XTS here is IEEE 1619 without ciphertext stealing (sectors are whole
//! blocks), the tweak being the IV encrypted with the second half of the key.
use crate::hash::HashAlg;
use crate::spec::{CipherAlg, CipherMode, CipherSpec, IvGenAlg};
use crate::xts_fused::{XtsDec, XtsEnc, XtsPass};
use cipher::generic_array::GenericArray;
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use qimg_core::{Error, Result};

/// One block cipher behind dynamic dispatch, on byte slices of whole blocks.
trait Blocks: Send + Sync {
    fn block_len(&self) -> usize;
    fn encrypt(&self, data: &mut [u8]);
    fn decrypt(&self, data: &mut [u8]);
    /// Fused XTS with this cipher as the data key (see [`crate::xts_fused`]): `t0` holds the
    /// encrypted first tweak of each sector of `data`. Returns false when this cipher has no
    /// fused path (the caller then runs the generic one).
    fn xts(&self, _t0: &[u8], _data: &mut [u8], _sector_size: usize, _encrypt: bool) -> bool {
        false
    }
    /// Whether [`Blocks::xts`] is implemented.
    fn has_xts(&self) -> bool {
        false
    }
}

struct Typed<C>(C);

/// View `data` (a multiple of the block length) as cipher blocks.
fn as_blocks<C: cipher::BlockSizeUser>(data: &mut [u8]) -> &mut [GenericArray<u8, C::BlockSize>] {
    let bs = C::block_size();
    debug_assert_eq!(data.len() % bs, 0);
    let n = data.len() / bs;
    // SAFETY: GenericArray<u8, N> is a repr(transparent)-like array of N bytes with alignment 1
    // and size N, so n of them occupy exactly the n*N bytes of `data`; the returned slice
    // reborrows `data` mutably for the same lifetime, so no aliasing is created.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), n) }
}

impl<C> Blocks for Typed<C>
where
    C: BlockEncrypt + BlockDecrypt + Send + Sync,
{
    fn block_len(&self) -> usize {
        C::block_size()
    }
    fn encrypt(&self, data: &mut [u8]) {
        self.0.encrypt_blocks(as_blocks::<C>(data));
    }
    fn decrypt(&self, data: &mut [u8]) {
        self.0.decrypt_blocks(as_blocks::<C>(data));
    }
}

/// AES through the `aes` 0.9 crate (cipher 0.5 traits), whose run-time detection picks VAES-512,
/// VAES-256 or AES-NI.
struct Aes09<C>(C);

fn as_blocks16(data: &mut [u8]) -> &mut [cipher05::Block<aes09::Aes128>] {
    debug_assert_eq!(data.len() % 16, 0);
    let n = data.len() / 16;
    // SAFETY: `Array<u8, U16>` is `repr(transparent)` over `[u8; 16]` (size 16, alignment 1), so
    // n of them occupy exactly the n*16 bytes of `data`; the slice reborrows `data` mutably for
    // the same lifetime.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), n) }
}

impl<C> Blocks for Aes09<C>
where
    C: cipher05::BlockCipherEncrypt<BlockSize = cipher05::consts::U16>
        + cipher05::BlockCipherDecrypt
        + Send
        + Sync,
{
    fn block_len(&self) -> usize {
        16
    }
    fn encrypt(&self, data: &mut [u8]) {
        self.0.encrypt_blocks(as_blocks16(data));
    }
    fn decrypt(&self, data: &mut [u8]) {
        self.0.decrypt_blocks(as_blocks16(data));
    }
    fn has_xts(&self) -> bool {
        true
    }
    fn xts(&self, t0: &[u8], data: &mut [u8], sector_size: usize, encrypt: bool) -> bool {
        let pass = XtsPass {
            data,
            t0,
            blocks_per_sector: sector_size / 16,
        };
        if encrypt {
            self.0.encrypt_with_backend(XtsEnc(pass));
        } else {
            self.0.decrypt_with_backend(XtsDec(pass));
        }
        true
    }
}

fn make_aes<C>(key: &[u8]) -> Result<Box<dyn Blocks>>
where
    C: cipher05::BlockCipherEncrypt<BlockSize = cipher05::consts::U16>
        + cipher05::BlockCipherDecrypt
        + cipher05::KeyInit
        + Send
        + Sync
        + 'static,
{
    let c = <C as cipher05::KeyInit>::new_from_slice(key)
        .map_err(|_| Error::invalid("Invalid cipher key length"))?;
    Ok(Box::new(Aes09(c)))
}

fn make<C>(key: &[u8]) -> Result<Box<dyn Blocks>>
where
    C: BlockEncrypt + BlockDecrypt + KeyInit + Send + Sync + 'static,
{
    let c = C::new_from_slice(key).map_err(|_| Error::invalid("Invalid cipher key length"))?;
    Ok(Box::new(Typed(c)))
}

fn new_blocks(alg: CipherAlg, key: &[u8]) -> Result<Box<dyn Blocks>> {
    if key.len() != alg.key_len() {
        return Err(Error::invalid(format!(
            "Cipher {} needs a {}-byte key, not {}",
            alg.name(),
            alg.key_len(),
            key.len()
        )));
    }
    match alg {
        CipherAlg::Aes128 => make_aes::<aes09::Aes128>(key),
        CipherAlg::Aes192 => make_aes::<aes09::Aes192>(key),
        CipherAlg::Aes256 => make_aes::<aes09::Aes256>(key),
        CipherAlg::Twofish128 | CipherAlg::Twofish192 | CipherAlg::Twofish256 => {
            make::<twofish::Twofish>(key)
        }
        CipherAlg::Serpent128 | CipherAlg::Serpent192 | CipherAlg::Serpent256 => {
            make::<serpent::Serpent>(key)
        }
        CipherAlg::Cast5_128 => make::<cast5::Cast5>(key),
    }
}

/// Bytes processed per batch (one bulk cipher call).
const BATCH: usize = 64 << 10;

/// Encrypts and decrypts whole sectors with one key.
pub struct SectorCipher {
    spec: CipherSpec,
    sector_size: usize,
    main: Box<dyn Blocks>,
    /// XTS: the tweak cipher (second key half).
    tweak: Option<Box<dyn Blocks>>,
    /// ESSIV: the IV cipher keyed by hash(key).
    essiv: Option<Box<dyn Blocks>>,
    /// XTS with AES-128/256 on a CPU with VAES: the register-resident kernel.
    #[cfg(target_arch = "x86_64")]
    vaes: Option<crate::xts_vaes::VaesXts>,
    /// Use the cipher's fused XTS path where it has one (AES); false only in tests/benches.
    fused: bool,
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectorCipher")
            .field("spec", &self.spec)
            .field("sector_size", &self.sector_size)
            .finish_non_exhaustive()
    }
}

impl SectorCipher {
    /// A cipher for `spec` keyed with `key` ([`CipherSpec::key_len`] bytes), on sectors of
    /// `sector_size` bytes (512 for LUKS1; 512–4096 for LUKS2), each sector's IV being its index.
    pub fn new(spec: CipherSpec, key: &[u8], sector_size: usize) -> Result<Self> {
        spec.validate()?;
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(Error::invalid(format!(
                "Unsupported encryption sector size {sector_size}"
            )));
        }
        if key.len() != spec.key_len() {
            return Err(Error::invalid(format!(
                "Cipher {}-{} needs a {}-byte key, not {}",
                spec.alg.name(),
                spec.mode.name(),
                spec.key_len(),
                key.len()
            )));
        }
        #[cfg(target_arch = "x86_64")]
        let mut vaes = None;
        let (main, tweak) = if spec.mode == CipherMode::Xts {
            let (k1, k2) = key.split_at(key.len() / 2);
            #[cfg(target_arch = "x86_64")]
            if matches!(spec.alg, CipherAlg::Aes128 | CipherAlg::Aes256) {
                vaes = crate::xts_vaes::VaesXts::new(k1);
            }
            (new_blocks(spec.alg, k1)?, Some(new_blocks(spec.alg, k2)?))
        } else {
            (new_blocks(spec.alg, key)?, None)
        };
        let essiv = match (spec.ivgen, spec.ivgen_hash) {
            (Some(IvGenAlg::Essiv), Some(h)) => Some(essiv_cipher(spec.alg, h, key)?),
            _ => None,
        };
        Ok(Self {
            spec,
            sector_size,
            tweak,
            essiv,
            #[cfg(target_arch = "x86_64")]
            vaes,
            fused: main.has_xts(),
            main,
        })
    }

    /// The same cipher forced onto the generic (unfused, three-pass) XTS path: for tests and
    /// benchmarks comparing the two. Results are identical.
    #[doc(hidden)]
    pub fn generic_path(mut self) -> Self {
        self.fused = false;
        self
    }

    /// The same cipher on the 256-bit (AVX2) VAES XTS kernel even where AVX-512F is present:
    /// for tests and benchmarks. Results are identical.
    #[doc(hidden)]
    pub fn vaes256(mut self) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = &mut self.vaes {
            v.narrow();
        }
        self
    }

    /// The XTS kernel in use: `"VAES-512"`, `"VAES-256"`, or `"aes-crate"` (other modes: the
    /// same label; it names the XTS path only). For benchmarks and diagnostics.
    #[doc(hidden)]
    pub fn xts_kernel(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if let (true, Some(v)) = (self.fused, &self.vaes) {
            return v.kernel();
        }
        if self.fused {
            "aes-crate"
        } else {
            "generic"
        }
    }

    /// The same cipher without the VAES XTS kernels (the fused loop over the `aes` crate,
    /// as on CPUs without VAES): for tests and benchmarks. Results are identical.
    #[doc(hidden)]
    pub fn without_vaes(mut self) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            self.vaes = None;
        }
        self
    }

    /// The spec this cipher was made for.
    pub fn spec(&self) -> &CipherSpec {
        &self.spec
    }

    /// Sector size in bytes.
    pub fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn check(&self, buf: &[u8]) -> Result<()> {
        if !buf.len().is_multiple_of(self.sector_size) {
            return Err(Error::invalid(format!(
                "Encrypted I/O of {} bytes is not a multiple of the {}-byte sector",
                buf.len(),
                self.sector_size
            )));
        }
        Ok(())
    }

    /// Encrypt `buf` (whole sectors) in place; its first sector has number `first_sector`.
    pub fn encrypt(&self, first_sector: u64, buf: &mut [u8]) -> Result<()> {
        self.run(first_sector, buf, true)
    }

    /// Decrypt `buf` (whole sectors) in place; its first sector has number `first_sector`.
    pub fn decrypt(&self, first_sector: u64, buf: &mut [u8]) -> Result<()> {
        self.run(first_sector, buf, false)
    }

    /// Work in batches of [`BATCH`] bytes: one IV pass, one tweak/ESSIV cipher call and one bulk
    /// cipher call per batch, so the block cipher's wide (VAES) paths see long runs.
    fn run(&self, first_sector: u64, buf: &mut [u8], encrypt: bool) -> Result<()> {
        self.check(buf)?;
        let batch = BATCH.max(self.sector_size);
        // The fused XTS path and ECB need no scratch: skip its allocation and zeroing.
        let needs_scratch = match self.spec.mode {
            CipherMode::Ecb => false,
            CipherMode::Cbc => !encrypt,
            CipherMode::Ctr => true,
            CipherMode::Xts => !self.fused,
        };
        let mut scratch = vec![
            0u8;
            if needs_scratch {
                batch.min(buf.len())
            } else {
                0
            }
        ];
        let mut ivs = [0u8; 16 * (BATCH / 512)];
        let mut sector = first_sector;
        for chunk in buf.chunks_mut(batch) {
            let n = chunk.len() / self.sector_size;
            let ivs = &mut ivs[..16 * n];
            self.ivs(sector, ivs);
            let scratch = &mut scratch[..if needs_scratch { chunk.len() } else { 0 }];
            match (self.spec.mode, encrypt) {
                (CipherMode::Ecb, true) => self.main.encrypt(chunk),
                (CipherMode::Ecb, false) => self.main.decrypt(chunk),
                (CipherMode::Cbc, true) => self.cbc_encrypt(ivs, chunk),
                (CipherMode::Cbc, false) => self.cbc_decrypt(ivs, chunk, scratch),
                (CipherMode::Ctr, _) => self.ctr(ivs, chunk, scratch),
                (CipherMode::Xts, _) => self.xts(ivs, chunk, scratch, encrypt),
            }
            sector = sector.wrapping_add(n as u64);
        }
        Ok(())
    }

    /// The IVs of sectors `first…` (16 bytes each in `out`; the first block-length bytes used).
    fn ivs(&self, first: u64, out: &mut [u8]) {
        out.fill(0);
        for (i, iv) in out.chunks_exact_mut(16).enumerate() {
            let n = first.wrapping_add(i as u64);
            match self.spec.ivgen {
                None => {}
                Some(IvGenAlg::Plain) => iv[..4].copy_from_slice(&(n as u32).to_le_bytes()),
                Some(IvGenAlg::Plain64 | IvGenAlg::Essiv) => {
                    iv[..8].copy_from_slice(&n.to_le_bytes())
                }
            }
        }
        if let Some(e) = &self.essiv {
            let bl = e.block_len();
            if bl == 16 {
                e.encrypt(out);
            } else {
                for iv in out.chunks_exact_mut(16) {
                    e.encrypt(&mut iv[..bl]);
                }
            }
        }
    }

    fn cbc_encrypt(&self, ivs: &[u8], data: &mut [u8]) {
        let bl = self.main.block_len();
        for (sector, iv) in data
            .chunks_exact_mut(self.sector_size)
            .zip(ivs.chunks_exact(16))
        {
            let mut prev = [0u8; 16];
            prev[..bl].copy_from_slice(&iv[..bl]);
            for block in sector.chunks_exact_mut(bl) {
                xor(block, &prev[..bl]);
                self.main.encrypt(block);
                prev[..bl].copy_from_slice(block);
            }
        }
    }

    /// Parallel CBC decryption: P[i] = D(C[i]) ^ C[i-1], with C[-1] = the sector's IV.
    fn cbc_decrypt(&self, ivs: &[u8], data: &mut [u8], scratch: &mut [u8]) {
        let bl = self.main.block_len();
        let ss = self.sector_size;
        for ((s, d), iv) in scratch
            .chunks_exact_mut(ss)
            .zip(data.chunks_exact(ss))
            .zip(ivs.chunks_exact(16))
        {
            s[..bl].copy_from_slice(&iv[..bl]);
            s[bl..].copy_from_slice(&d[..ss - bl]);
        }
        self.main.decrypt(data);
        xor(data, scratch);
    }

    /// CTR: each sector's keystream is the encryption of IV, IV+1, … (big-endian over the
    /// whole block).
    fn ctr(&self, ivs: &[u8], data: &mut [u8], scratch: &mut [u8]) {
        let bl = self.main.block_len();
        for (s, iv) in scratch
            .chunks_exact_mut(self.sector_size)
            .zip(ivs.chunks_exact(16))
        {
            let mut counter = [0u8; 16];
            counter[..bl].copy_from_slice(&iv[..bl]);
            for block in s.chunks_exact_mut(bl) {
                block.copy_from_slice(&counter[..bl]);
                for b in counter[..bl].iter_mut().rev() {
                    *b = b.wrapping_add(1);
                    if *b != 0 {
                        break;
                    }
                }
            }
        }
        self.main.encrypt(scratch);
        xor(data, scratch);
    }

    /// XTS: T0 = E2(IV), T(i+1) = T(i)·α in GF(2^128); C = E1(P ⊕ T) ⊕ T. All tweaks of the
    /// batch are encrypted in one call, and all data in one call.
    fn xts(&self, ivs: &mut [u8], data: &mut [u8], scratch: &mut [u8], encrypt: bool) {
        if let Some(tw) = &self.tweak {
            tw.encrypt(ivs);
        }
        #[cfg(target_arch = "x86_64")]
        if let (true, Some(v)) = (self.fused, &self.vaes) {
            if v.xts(ivs, data, self.sector_size / 16, encrypt) {
                return;
            }
        }
        if self.fused && self.main.xts(ivs, data, self.sector_size, encrypt) {
            return;
        }
        // Tweaks of every block into `scratch` (a short serial chain per sector), then one
        // vectorized XOR pass before and one after the bulk cipher call.
        for (s, t0) in scratch
            .chunks_exact_mut(self.sector_size)
            .zip(ivs.chunks_exact(16))
        {
            let mut t = u128::from_le_bytes(t0.try_into().unwrap_or([0; 16]));
            for sb in s.chunks_exact_mut(16) {
                sb.copy_from_slice(&t.to_le_bytes());
                t = (t << 1) ^ ((t >> 127) * 0x87);
            }
        }
        xor(data, scratch);
        if encrypt {
            self.main.encrypt(data);
        } else {
            self.main.decrypt(data);
        }
        xor(data, scratch);
    }
}

/// The ESSIV cipher: the same family keyed by `hash(key)`.
fn essiv_cipher(alg: CipherAlg, hash: HashAlg, key: &[u8]) -> Result<Box<dyn Blocks>> {
    let salt = hash.digest(&[key]);
    let ivalg = CipherAlg::from_family(alg.family(), salt.len())?;
    new_blocks(ivalg, &salt)
}

/// `a ^= b` over the common length, 16 bytes at a time where possible.
fn xor(a: &mut [u8], b: &[u8]) {
    let n = a.len().min(b.len());
    let (a, b) = (&mut a[..n], &b[..n]);
    let mut ac = a.chunks_exact_mut(16);
    let mut bc = b.chunks_exact(16);
    for (x, y) in (&mut ac).zip(&mut bc) {
        let v = u128::from_ne_bytes(x[..].try_into().unwrap_or([0; 16]))
            ^ u128::from_ne_bytes(y.try_into().unwrap_or([0; 16]));
        x.copy_from_slice(&v.to_ne_bytes());
    }
    for (x, y) in ac.into_remainder().iter_mut().zip(bc.remainder()) {
        *x ^= y;
    }
}
