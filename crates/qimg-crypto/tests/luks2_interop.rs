//! LUKS2 read against cryptsetup: images `cryptsetup luksFormat --type luks2` makes with PBKDF2,
//! Argon2id and Argon2i key slots (512- and 4096-byte sectors) unlock to the master key
//! cryptsetup dumps, and the payload decrypts as an independent AES-XTS (Python's
//! `cryptography`) decrypts it with that key. Hostile LUKS2 headers are refused.
mod common;
use common::{have, ok, run, MemIo};
use qimg_crypto::luks2::Luks2Header;
use qimg_crypto::WorkLimits;
use std::cell::RefCell;

fn dump_key(img: &str, keyfile: &str) -> Vec<u8> {
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

/// sha256 of the first `n` sectors of the payload decrypted by Python's `cryptography`
/// (AES-XTS, tweak = sector index in sector-size units, as LUKS2 sets `iv_large_sectors`).
fn python_decrypt(img: &str, offset: u64, sector: usize, n: usize, key: &[u8]) -> Option<String> {
    let script = r#"
import sys, hashlib
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img, off, ss, n, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), bytes.fromhex(sys.argv[5])
data = open(img, 'rb').read()[off:off + ss * n]
out = b''
for i in range(n):
    d = Cipher(algorithms.AES(key), modes.XTS(i.to_bytes(16, 'little'))).decryptor()
    out += d.update(data[i * ss:(i + 1) * ss]) + d.finalize()
print(hashlib.sha256(out).hexdigest())
"#;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let o = run(
        "/usr/bin/python3",
        &[
            "-c",
            script,
            img,
            &offset.to_string(),
            &sector.to_string(),
            &n.to_string(),
            &hex,
        ],
    );
    if !o.status.success() {
        eprintln!(
            "SKIP: python3 cryptography unavailable: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn check_image(img: &str, keyfile: &str, pass: &[u8]) {
    let bytes = std::fs::read(img).unwrap();
    let io = MemIo(RefCell::new(bytes.clone()));
    let h = Luks2Header::read(&io, bytes.len() as u64).unwrap();
    let mk = h.unlock(&io, pass, &WorkLimits::default()).unwrap();
    assert_eq!(mk, dump_key(img, keyfile), "{img}: master key");
    let e = h.unlock(&io, b"wrong", &WorkLimits::default()).unwrap_err();
    assert!(e.message.contains("Invalid password"));
    let seg = h.segment().unwrap().clone();
    let n = 16usize;
    let mut payload =
        bytes[seg.offset as usize..seg.offset as usize + n * seg.sector_size].to_vec();
    h.payload_cipher(&mk)
        .unwrap()
        .decrypt(0, &mut payload)
        .unwrap();
    if let Some(want) = python_decrypt(img, seg.offset, seg.sector_size, n, &mk) {
        assert_eq!(common::sha256_hex(&payload), want, "{img}: payload");
    }
}

#[test]
fn cryptsetup_luks2_images() {
    if !have("cryptsetup", "cryptsetup-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"hunter2").unwrap();
    let key = key.to_str().unwrap();
    for extra in [
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "512",
        ][..],
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "1024",
            "--pbkdf-force-iterations",
            "4",
        ][..],
        &[
            "--pbkdf",
            "argon2i",
            "--pbkdf-memory",
            "2048",
            "--pbkdf-force-iterations",
            "4",
            "--key-size",
            "256",
        ][..],
    ] {
        let img = dir.path().join("l2.img");
        std::fs::write(&img, vec![0u8; 18 << 20]).unwrap();
        let img = img.to_str().unwrap();
        let mut args = vec![
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--key-file",
            key,
        ];
        args.extend_from_slice(extra);
        args.push(img);
        let o = run("cryptsetup", &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        check_image(img, key, b"hunter2");
    }
}

#[test]
fn shared_luks2_sample() {
    let Some(dir) = common::samples() else { return };
    if !have("cryptsetup", "cryptsetup-bin") {
        return;
    }
    let img = dir.join("cryptsetup-luks2-negative.img");
    let key = dir.join("key.txt");
    let pass = std::fs::read(&key).unwrap();
    check_image(img.to_str().unwrap(), key.to_str().unwrap(), &pass);
}

#[test]
fn hostile_luks2_headers() {
    let Some(dir) = common::samples() else { return };
    let good = std::fs::read(dir.join("cryptsetup-luks2-negative.img")).unwrap();
    let len = good.len() as u64;
    let parse = |b: Vec<u8>| {
        let io = MemIo(RefCell::new(b));
        Luks2Header::read(&io, len)
    };
    parse(good.clone()).unwrap();
    let hdr = u64::from_be_bytes(good[8..16].try_into().unwrap()) as usize;
    let uuid = parse(good.clone()).unwrap().bin.uuid.clone();
    // The secondary header (at hdr_size) wiped: every primary fault below is then fatal.
    let no_secondary = |mut b: Vec<u8>| {
        b[hdr..hdr + 4096].fill(0);
        b
    };
    // A flipped JSON byte breaks the primary's checksum: the secondary is used (as cryptsetup
    // does); without it the checksum error stands.
    let mut b = good.clone();
    b[4096 + 10] ^= 1;
    assert_eq!(parse(b.clone()).unwrap().bin.uuid, uuid);
    let e = parse(no_secondary(b)).unwrap_err();
    assert_eq!(e.code.as_str(), "ERR_QIMG_CORRUPT");
    assert!(e.message.contains("checksum"), "{}", e.message);
    // hdr_size not a power of two / huge: the secondary is found by scanning the possible sizes.
    for size in [12345u64, 1 << 40, 0] {
        let mut b = good.clone();
        b[8..16].copy_from_slice(&size.to_be_bytes());
        assert_eq!(parse(b.clone()).unwrap().bin.uuid, uuid, "{size}");
        let e = parse(no_secondary(b)).unwrap_err();
        assert_eq!(e.code.as_str(), "ERR_QIMG_CORRUPT", "{size}");
    }
    // Bad JSON with a valid checksum (so the primary is taken), and hostile numbers.
    for json in [
        &b"{not json"[..],
        br#"{"keyslots":{"0":{"type":"luks2","key_size":1000000}},"segments":{},"digests":{}}"#,
        br#"{"keyslots":{},"segments":{"0":{"type":"crypt","offset":"99999999999","size":"dynamic","sector_size":512,"encryption":"aes-xts-plain64"}},"digests":{}}"#,
        br#"{"keyslots":{},"segments":{"0":{"type":"crypt","offset":"16384","size":"dynamic","sector_size":1000,"encryption":"aes-xts-plain64"}},"digests":{}}"#,
    ] {
        let mut b = good.clone();
        b[4096..hdr].fill(0);
        b[4096..4096 + json.len()].copy_from_slice(json);
        b[448..512].fill(0);
        let sum = qimg_crypto::HashAlg::Sha256.digest(&[&b[..hdr]]);
        b[448..480].copy_from_slice(&sum);
        let e = parse(b).unwrap_err();
        assert_eq!(e.code.as_str(), "ERR_QIMG_CORRUPT", "{}", String::from_utf8_lossy(json));
    }
}

/// cryptsetup falls back to the secondary header when the primary's checksum fails; so does
/// qimg. The image is made by cryptsetup, its primary JSON corrupted; `cryptsetup open
/// --test-passphrase` (on a copy: cryptsetup may repair what it opens) still accepts it, and qimg
/// unlocks the corrupted image to the master key cryptsetup dumped before the damage.
#[test]
fn luks2_secondary_header_fallback() {
    if !have("cryptsetup", "cryptsetup-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"hunter2").unwrap();
    let key = key.to_str().unwrap();
    let img = dir.path().join("l2.img");
    std::fs::write(&img, vec![0u8; 18 << 20]).unwrap();
    let img = img.to_str().unwrap();
    let o = run(
        "cryptsetup",
        &[
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--key-file",
            key,
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            img,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mk = dump_key(img, key);
    let mut bytes = std::fs::read(img).unwrap();
    // Corrupt the primary's JSON area (its checksum then fails) and, separately, its magic.
    for (what, at) in [("JSON", 4096 + 100), ("magic", 0)] {
        let mut b = bytes.clone();
        b[at] ^= 0x55;
        let bad = dir.path().join(format!("bad-{what}.img"));
        std::fs::write(&bad, &b).unwrap();
        let copy = dir.path().join(format!("copy-{what}.img"));
        std::fs::write(&copy, &b).unwrap();
        let o = run(
            "cryptsetup",
            &[
                "open",
                "--test-passphrase",
                "--key-file",
                key,
                copy.to_str().unwrap(),
            ],
        );
        assert!(
            o.status.success(),
            "cryptsetup refused the image with a corrupt primary {what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let io = MemIo(RefCell::new(b.clone()));
        let h = Luks2Header::read(&io, b.len() as u64).unwrap();
        assert_eq!(
            h.unlock(&io, b"hunter2", &WorkLimits::default()).unwrap(),
            mk,
            "{what}"
        );
    }
    // Both headers corrupt: refused.
    let hdr = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
    bytes[4096 + 100] ^= 0x55;
    bytes[hdr + 4096 + 100] ^= 0x55;
    let io = MemIo(RefCell::new(bytes.clone()));
    let e = Luks2Header::read(&io, bytes.len() as u64).unwrap_err();
    assert_eq!(e.code.as_str(), "ERR_QIMG_CORRUPT", "{}", e.message);
}

/// Argon2 cannot be interrupted from inside; a cancel during it must still return promptly.
/// A cryptsetup LUKS2 image's Argon2id slot is patched (JSON rewritten, checksum recomputed) to
/// 128 MiB × 64 passes — seconds of work — and the cancel flag is set 200 ms in.
#[test]
fn argon2_unlock_is_cancellable() {
    if !have("cryptsetup", "cryptsetup-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"hunter2").unwrap();
    let key = key.to_str().unwrap();
    let img = dir.path().join("a2.img");
    std::fs::write(&img, vec![0u8; 18 << 20]).unwrap();
    let img = img.to_str().unwrap();
    let o = run(
        "cryptsetup",
        &[
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--key-file",
            key,
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "1024",
            "--pbkdf-force-iterations",
            "4",
            img,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut b = std::fs::read(img).unwrap();
    let hdr = u64::from_be_bytes(b[8..16].try_into().unwrap()) as usize;
    let end = 4096 + b[4096..hdr].iter().position(|&c| c == 0).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&b[4096..end]).unwrap();
    for (_, ks) in j["keyslots"].as_object_mut().unwrap() {
        ks["kdf"]["memory"] = serde_json::json!(128 * 1024);
        ks["kdf"]["time"] = serde_json::json!(64);
    }
    let text = serde_json::to_vec(&j).unwrap();
    b[4096..hdr].fill(0);
    b[4096..4096 + text.len()].copy_from_slice(&text);
    b[448..512].fill(0);
    let sum = qimg_crypto::HashAlg::Sha256.digest(&[&b[..hdr]]);
    b[448..480].copy_from_slice(&sum);
    let io = MemIo(RefCell::new(b.clone()));
    let h = Luks2Header::read(&io, b.len() as u64).unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limits = WorkLimits {
        cancel: Some(flag.clone()),
        ..WorkLimits::default()
    };
    let setter = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let e = h.unlock(&io, b"hunter2", &limits).unwrap_err();
    let elapsed = started.elapsed();
    setter.join().unwrap();
    assert_eq!(e.code.as_str(), "ERR_QIMG_ABORTED", "{}", e.message);
    assert!(
        elapsed < std::time::Duration::from_millis(1500),
        "{elapsed:?}"
    );
}
