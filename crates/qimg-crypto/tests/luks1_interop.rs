//! LUKS1 against cryptsetup: qimg opens cryptsetup's images (the shared samples and images
//! `cryptsetup luksFormat --type luks1` makes here), and cryptsetup accepts qimg's headers
//! (`luksDump`, `open --test-passphrase`). Decrypted payloads are compared with the sample
//! manifest's hashes (checked there against QEMU) and with cryptsetup-written data.
mod common;
use common::{have, ok, run, sha256_hex, MemIo};
use qimg_crypto::luks1::{self, Luks1Header, Luks1Params};
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, HashAlg, IvGenAlg, WorkLimits};
use std::cell::RefCell;

fn open_payload(img: &[u8], pass: &[u8]) -> (Luks1Header, Vec<u8>) {
    let h = Luks1Header::parse(img).expect("parse");
    h.check_payload(img.len() as u64).unwrap();
    let io = MemIo(RefCell::new(img.to_vec()));
    let u = h.unlock(&io, pass, &WorkLimits::default()).expect("unlock");
    let mut payload = img[h.payload_offset_bytes() as usize..].to_vec();
    h.payload_cipher(&u.master_key)
        .unwrap()
        .decrypt(0, &mut payload)
        .unwrap();
    (h, payload)
}

#[test]
fn shared_samples_decrypt_as_the_manifest_says() {
    let Some(dir) = common::samples() else { return };
    let key = std::fs::read(dir.join("key.txt")).unwrap();
    for (name, raw_sha, key_bytes) in [
        (
            "cryptsetup-luks1-xts256.img",
            "4dae62e111b00b3a05c6466792c4e925a4adb4a9b79b7776b5563bd47eca9cdb",
            32,
        ),
        (
            "cryptsetup-luks1-xts512.img",
            "8688f973ea55ccf175d658dfc28c37e71dc7a6f82e952e3115861aaff6fc4630",
            64,
        ),
    ] {
        let img = std::fs::read(dir.join(name)).unwrap();
        let (h, payload) = open_payload(&img, &key);
        assert_eq!(h.key_bytes, key_bytes, "{name}");
        assert_eq!(h.cipher_mode, "xts-plain64");
        assert_eq!(sha256_hex(&payload), raw_sha, "{name}");
        let io = MemIo(RefCell::new(img.clone()));
        let err = h
            .unlock(&io, b"hunter3", &WorkLimits::default())
            .unwrap_err();
        assert_eq!(err.code.as_str(), "ERR_QIMG_INVALID_ARGUMENT");
        assert!(err.message.contains("Invalid password"), "{}", err.message);
    }
}

/// A cryptsetup LUKS1 image with `cipher`, `key_size` bits and `hash`, holding a known payload
/// written through cryptsetup's own view: since `cryptsetup open` needs device-mapper, the
/// payload is written by qimg and checked by decrypting a second time with the key cryptsetup
/// dumps (`luksDump --dump-master-key`), which is independent of qimg's key-slot code.
fn cryptsetup_image(
    cipher: &str,
    key_size: u32,
    hash: &str,
) -> Option<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.img");
    let key = dir.path().join("key");
    std::fs::write(&key, b"hunter2").unwrap();
    std::fs::write(&img, vec![0u8; 3 << 20]).unwrap();
    let o = run(
        "cryptsetup",
        &[
            "luksFormat",
            "--type",
            "luks1",
            "--batch-mode",
            "--key-file",
            key.to_str().unwrap(),
            "--pbkdf-force-iterations",
            "1000",
            "--cipher",
            cipher,
            "--key-size",
            &key_size.to_string(),
            "--hash",
            hash,
            img.to_str().unwrap(),
        ],
    );
    if !o.status.success() {
        eprintln!(
            "SKIP: cryptsetup cannot make {cipher}/{key_size}/{hash} here: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    Some((dir, img.to_str().unwrap().to_string()))
}

/// The master key as cryptsetup dumps it.
fn cryptsetup_master_key(img: &str, keyfile: &str) -> Vec<u8> {
    let out = ok(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            keyfile,
            img,
        ],
    );
    let mut hex = String::new();
    let mut on = false;
    for line in out.lines() {
        if line.starts_with("MK dump:") {
            on = true;
            hex.push_str(line.trim_start_matches("MK dump:"));
        } else if on && line.starts_with(['\t', ' ']) {
            hex.push_str(line);
        } else if on {
            break;
        }
    }
    let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn qimg_opens_cryptsetup_luks1_images() {
    if !have("cryptsetup", "cryptsetup-bin") {
        return;
    }
    for (cipher, bits, hash, mode) in [
        ("aes-xts-plain64", 256, "sha256", "xts-plain64"),
        ("aes-xts-plain64", 512, "sha256", "xts-plain64"),
        ("aes-cbc-essiv:sha256", 256, "sha256", "cbc-essiv:sha256"),
        ("aes-xts-plain64", 256, "sha1", "xts-plain64"),
        ("aes-cbc-plain", 128, "sha512", "cbc-plain"),
        ("twofish-xts-plain64", 256, "sha256", "xts-plain64"),
        (
            "serpent-cbc-essiv:sha256",
            256,
            "ripemd160",
            "cbc-essiv:sha256",
        ),
    ] {
        let Some((dir, img)) = cryptsetup_image(cipher, bits, hash) else {
            continue;
        };
        let bytes = std::fs::read(&img).unwrap();
        let h = Luks1Header::parse(&bytes).unwrap();
        assert_eq!(h.cipher_mode, mode);
        assert_eq!(h.hash_spec, hash);
        let io = MemIo(RefCell::new(bytes.clone()));
        let u = h.unlock(&io, b"hunter2", &WorkLimits::default()).unwrap();
        let keyfile = dir.path().join("key");
        let mk = cryptsetup_master_key(&img, keyfile.to_str().unwrap());
        assert_eq!(u.master_key, mk, "{cipher} {bits} {hash}: master key");
    }
}

fn spec(alg: CipherAlg, mode: CipherMode, iv: Option<IvGenAlg>, h: Option<HashAlg>) -> CipherSpec {
    CipherSpec {
        alg,
        mode,
        ivgen: iv,
        ivgen_hash: h,
    }
}

#[test]
fn cryptsetup_accepts_qimg_luks1_headers() {
    if !have("cryptsetup", "cryptsetup-bin") {
        return;
    }
    use CipherAlg::*;
    use CipherMode::*;
    for (s, hash, want_cipher) in [
        (
            spec(Aes256, Xts, Some(IvGenAlg::Plain64), None),
            HashAlg::Sha256,
            "aes-xts-plain64",
        ),
        (
            spec(Aes128, Xts, Some(IvGenAlg::Plain64), None),
            HashAlg::Sha1,
            "aes-xts-plain64",
        ),
        (
            spec(Aes256, Cbc, Some(IvGenAlg::Essiv), Some(HashAlg::Sha256)),
            HashAlg::Sha512,
            "aes-cbc-essiv:sha256",
        ),
        (
            spec(Aes192, Cbc, Some(IvGenAlg::Plain), None),
            HashAlg::Ripemd160,
            "aes-cbc-plain",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("q.luks");
        let key = dir.path().join("key");
        std::fs::write(&key, b"hunter2").unwrap();
        let io = MemIo(RefCell::new(Vec::new()));
        let mut p = Luks1Params::new(s, hash);
        p.slot_iterations = Some(1000);
        p.mk_iterations = Some(1000);
        let (h, mk) = luks1::create(&p, b"hunter2", &io).unwrap();
        let mut bytes = io.0.into_inner();
        bytes.resize(h.payload_offset_bytes() as usize + (1 << 20), 0);
        std::fs::write(&img, &bytes).unwrap();
        let dump = ok("cryptsetup", &["luksDump", img.to_str().unwrap()]);
        assert!(dump.contains("Version:       \t1"), "{dump}");
        let (c, m) = want_cipher.split_once('-').unwrap();
        assert!(dump.contains(&format!("Cipher name:   \t{c}")), "{dump}");
        assert!(dump.contains(&format!("Cipher mode:   \t{m}")), "{dump}");
        assert!(
            dump.contains(&format!("Hash spec:     \t{}", hash.name())),
            "{dump}"
        );
        assert!(dump.contains(&h.uuid), "{dump}");
        let args = [
            "open",
            "--test-passphrase",
            "--key-file",
            key.to_str().unwrap(),
            img.to_str().unwrap(),
        ];
        ok("cryptsetup", &args);
        std::fs::write(&key, b"wrong").unwrap();
        assert!(!run("cryptsetup", &args).status.success());
        std::fs::write(&key, b"hunter2").unwrap();
        assert_eq!(
            cryptsetup_master_key(img.to_str().unwrap(), key.to_str().unwrap()),
            mk
        );
    }
}
