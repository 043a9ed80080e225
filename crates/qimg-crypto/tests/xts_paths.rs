//! XTS: the fast paths (the VAES-512 kernel where the CPU has it, the VAES-256 one, and the
//! fused `aes`-crate loop used without VAES) against the generic three-pass path, against one-sector-at-a-time calls and against
//! RustCrypto's `xts-mode`, on pseudo-random data, keys and sector numbers, for every AES key
//! size, several sector sizes and sector counts that end runs, windows and batches mid-way.
//! Then against OpenSSL (through Python's `cryptography`, an independent implementation).
use cipher::KeyInit;
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, IvGenAlg, SectorCipher};
use std::process::Command;

/// xorshift64*: deterministic pseudo-random bytes (the seed is printed on failure).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

fn spec(alg: CipherAlg) -> CipherSpec {
    CipherSpec {
        alg,
        mode: CipherMode::Xts,
        ivgen: Some(IvGenAlg::Plain64),
        ivgen_hash: None,
    }
}

/// The reference: xts-mode over aes 0.8, sector by sector.
fn reference(alg: CipherAlg, key: &[u8], ss: usize, first: u64, data: &mut [u8], enc: bool) {
    let h = key.len() / 2;
    macro_rules! go {
        ($c:ty) => {{
            let x = xts_mode::Xts128::new(
                <$c>::new_from_slice(&key[..h]).unwrap(),
                <$c>::new_from_slice(&key[h..]).unwrap(),
            );
            for (i, s) in data.chunks_exact_mut(ss).enumerate() {
                let t = (first.wrapping_add(i as u64) as u128).to_le_bytes();
                if enc {
                    x.encrypt_sector(s, t);
                } else {
                    x.decrypt_sector(s, t);
                }
            }
        }};
    }
    match alg {
        CipherAlg::Aes128 => go!(aes::Aes128),
        CipherAlg::Aes192 => go!(aes::Aes192),
        _ => go!(aes::Aes256),
    }
}

#[test]
fn fast_generic_single_sector_and_xts_mode_agree() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for alg in [CipherAlg::Aes128, CipherAlg::Aes192, CipherAlg::Aes256] {
        for ss in [512usize, 1024, 4096] {
            for sectors in [1usize, 2, 3, 7, 8, 9, 17, 129, 300] {
                let key = rng.bytes(spec(alg).key_len());
                let first = match rng.next() % 3 {
                    0 => rng.next() % 1000,
                    1 => u64::from(u32::MAX) - 2,
                    _ => rng.next(),
                };
                let what = format!("{alg:?} sector {ss} x{sectors} first {first}");
                let plain = rng.bytes(ss * sectors);
                let fast = SectorCipher::new(spec(alg), &key, ss).unwrap();
                let generic = SectorCipher::new(spec(alg), &key, ss)
                    .unwrap()
                    .generic_path();
                let fused = SectorCipher::new(spec(alg), &key, ss)
                    .unwrap()
                    .without_vaes();
                let narrow = SectorCipher::new(spec(alg), &key, ss).unwrap().vaes256();

                let mut a = plain.clone();
                fast.encrypt(first, &mut a).unwrap();
                let mut b = plain.clone();
                generic.encrypt(first, &mut b).unwrap();
                let mut c = plain.clone();
                for (i, s) in c.chunks_exact_mut(ss).enumerate() {
                    fast.encrypt(first.wrapping_add(i as u64), s).unwrap();
                }
                let mut d = plain.clone();
                reference(alg, &key, ss, first, &mut d, true);
                let mut x = plain.clone();
                fused.encrypt(first, &mut x).unwrap();
                assert!(a == x, "{what}: fast != fused aes-crate loop (encrypt)");
                fused.decrypt(first, &mut x).unwrap();
                assert!(x == plain, "{what}: fused aes-crate loop decrypt");
                let mut y = plain.clone();
                narrow.encrypt(first, &mut y).unwrap();
                assert!(a == y, "{what}: fast != {} (encrypt)", narrow.xts_kernel());
                narrow.decrypt(first, &mut y).unwrap();
                assert!(y == plain, "{what}: {} decrypt", narrow.xts_kernel());
                assert!(a != plain, "{what}: not encrypted");
                assert!(a == b, "{what}: fast != generic (encrypt)");
                assert!(a == c, "{what}: whole buffer != sector by sector (encrypt)");
                assert!(a == d, "{what}: fast != xts-mode (encrypt)");

                let mut e = a.clone();
                fast.decrypt(first, &mut e).unwrap();
                let mut f = a.clone();
                generic.decrypt(first, &mut f).unwrap();
                let mut g = a.clone();
                for (i, s) in g.chunks_exact_mut(ss).enumerate() {
                    fast.decrypt(first.wrapping_add(i as u64), s).unwrap();
                }
                let mut h = a.clone();
                reference(alg, &key, ss, first, &mut h, false);
                assert!(e == plain, "{what}: fast decrypt");
                assert!(f == plain, "{what}: generic decrypt");
                assert!(g == plain, "{what}: sector-by-sector decrypt");
                assert!(h == plain, "{what}: xts-mode decrypt");
            }
        }
    }
}

/// OpenSSL's AES-XTS through Python's `cryptography`, or `None` when it is not installed.
fn openssl_xts(key: &[u8], ss: usize, first: u64, data: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let script = format!(
        "import sys\n\
         from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
         k = bytes.fromhex('{}'); d = bytes.fromhex(sys.stdin.read().strip()); out = b''\n\
         for i in range(len(d) // {ss}):\n\
         \x20   t = (({first} + i) % 2**64).to_bytes(16, 'little')\n\
         \x20   e = Cipher(algorithms.AES(k), modes.XTS(t)).encryptor()\n\
         \x20   out += e.update(d[i*{ss}:(i+1)*{ss}]) + e.finalize()\n\
         sys.stdout.write(out.hex())\n",
        hex(key)
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex(data).as_bytes())
        .ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIP: python3 cryptography unavailable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect(),
    )
}

#[test]
fn fast_path_matches_openssl() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (alg, ss, sectors, first) in [
        (CipherAlg::Aes256, 512, 67, 0u64),
        (CipherAlg::Aes128, 512, 33, u64::from(u32::MAX) - 5),
        (CipherAlg::Aes256, 4096, 5, u64::MAX - 2),
        (CipherAlg::Aes128, 1024, 9, 12345),
    ] {
        let key = rng.bytes(spec(alg).key_len());
        let plain = rng.bytes(ss * sectors);
        let Some(want) = openssl_xts(&key, ss, first, &plain) else {
            return;
        };
        let c = SectorCipher::new(spec(alg), &key, ss).unwrap();
        let mut got = plain.clone();
        c.encrypt(first, &mut got).unwrap();
        assert!(got == want, "{alg:?} {ss} differs from OpenSSL");
        c.decrypt(first, &mut got).unwrap();
        assert!(got == plain);
    }
}
