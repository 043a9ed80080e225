//! The batched sector modes against RustCrypto's independent mode crates (xts-mode, cbc, ctr,
//! ecb over aes 0.8): same bytes for many sectors, several batch boundaries, and round trips.
use cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit, StreamCipher};
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, HashAlg, IvGenAlg, SectorCipher};

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 511) as u8).collect()
}

fn spec(alg: CipherAlg, mode: CipherMode, iv: Option<IvGenAlg>) -> CipherSpec {
    CipherSpec {
        alg,
        mode,
        ivgen: iv,
        ivgen_hash: None,
    }
}

const SECTORS: usize = 300; // > two 64 KiB batches
const FIRST: u64 = 0x1_0000_0005;

#[test]
fn xts_matches_xts_mode() {
    let key: Vec<u8> = (0..64u8).map(|x| x.wrapping_mul(3)).collect();
    let c = SectorCipher::new(
        spec(CipherAlg::Aes256, CipherMode::Xts, Some(IvGenAlg::Plain64)),
        &key,
        512,
    )
    .unwrap();
    let plain = data(512 * SECTORS);
    let mut mine = plain.clone();
    c.encrypt(FIRST, &mut mine).unwrap();
    let x = xts_mode::Xts128::new(
        aes::Aes256::new_from_slice(&key[..32]).unwrap(),
        aes::Aes256::new_from_slice(&key[32..]).unwrap(),
    );
    let mut theirs = plain.clone();
    x.encrypt_area(&mut theirs, 512, FIRST as u128, xts_mode::get_tweak_default);
    assert!(mine == theirs);
    c.decrypt(FIRST, &mut mine).unwrap();
    assert!(mine == plain);
}

#[test]
fn cbc_essiv_and_plain_match_cbc() {
    let key: Vec<u8> = (0..32u8).collect();
    let plain = data(512 * SECTORS);
    for essiv in [false, true] {
        let mut s = spec(CipherAlg::Aes256, CipherMode::Cbc, Some(IvGenAlg::Plain));
        if essiv {
            s.ivgen = Some(IvGenAlg::Essiv);
            s.ivgen_hash = Some(HashAlg::Sha256);
        }
        let c = SectorCipher::new(s, &key, 512).unwrap();
        let mut mine = plain.clone();
        c.encrypt(FIRST, &mut mine).unwrap();
        let salt = HashAlg::Sha256.digest(&[&key]);
        let ivc = aes::Aes256::new_from_slice(&salt).unwrap();
        for (i, (m, p)) in mine.chunks(512).zip(plain.chunks(512)).enumerate() {
            let n = FIRST + i as u64;
            let mut iv = [0u8; 16];
            if essiv {
                iv[..8].copy_from_slice(&n.to_le_bytes());
                use cipher::BlockEncrypt;
                ivc.encrypt_block((&mut iv).into());
            } else {
                iv[..4].copy_from_slice(&(n as u32).to_le_bytes());
            }
            let e = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv).unwrap();
            let want = e.encrypt_padded_vec_mut::<cipher::block_padding::NoPadding>(p);
            assert_eq!(m, &want[..], "sector {i} essiv={essiv}");
            let d = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv).unwrap();
            let back = d
                .decrypt_padded_vec_mut::<cipher::block_padding::NoPadding>(m)
                .unwrap();
            assert_eq!(back, p);
        }
        c.decrypt(FIRST, &mut mine).unwrap();
        assert!(mine == plain);
    }
}

#[test]
fn ctr_and_ecb_match() {
    let key: Vec<u8> = (0..16u8).collect();
    let plain = data(512 * SECTORS);
    let c = SectorCipher::new(
        spec(CipherAlg::Aes128, CipherMode::Ctr, Some(IvGenAlg::Plain64)),
        &key,
        512,
    )
    .unwrap();
    let mut mine = plain.clone();
    c.encrypt(FIRST, &mut mine).unwrap();
    for (i, (m, p)) in mine.chunks(512).zip(plain.chunks(512)).enumerate() {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&(FIRST + i as u64).to_le_bytes());
        let mut s = ctr::Ctr128BE::<aes::Aes128>::new_from_slices(&key, &iv).unwrap();
        let mut want = p.to_vec();
        s.apply_keystream(&mut want);
        assert_eq!(m, &want[..]);
    }
    let c = SectorCipher::new(spec(CipherAlg::Aes128, CipherMode::Ecb, None), &key, 512).unwrap();
    let mut mine = plain.clone();
    c.encrypt(FIRST, &mut mine).unwrap();
    let want = ecb::Encryptor::<aes::Aes128>::new_from_slice(&key)
        .unwrap()
        .encrypt_padded_vec_mut::<cipher::block_padding::NoPadding>(&plain);
    assert!(mine == want);
}

#[test]
fn every_cipher_round_trips_and_4k_sectors_work() {
    for alg in [
        CipherAlg::Aes192,
        CipherAlg::Twofish128,
        CipherAlg::Twofish256,
        CipherAlg::Serpent192,
        CipherAlg::Cast5_128,
    ] {
        for mode in [
            CipherMode::Cbc,
            CipherMode::Ctr,
            CipherMode::Ecb,
            CipherMode::Xts,
        ] {
            let s = spec(alg, mode, Some(IvGenAlg::Plain64));
            if s.validate().is_err() {
                assert_eq!(alg, CipherAlg::Cast5_128);
                continue;
            }
            let key = vec![9u8; s.key_len()];
            for ss in [512, 4096] {
                let c = SectorCipher::new(s, &key, ss).unwrap();
                let plain = data(ss * 20);
                let mut b = plain.clone();
                c.encrypt(7, &mut b).unwrap();
                assert!(b != plain);
                c.decrypt(7, &mut b).unwrap();
                assert!(b == plain, "{alg:?} {mode:?} {ss}");
            }
        }
    }
}
