//! Malformed LUKS1 headers: each mutation of a valid header is refused with a typed error (and
//! the message cryptsetup / QEMU give where they have one), never a panic, and hostile key
//! derivation work is capped or cancelled.
mod common;
use common::MemIo;
use qimg_crypto::luks1::{self, Luks1Header, Luks1Params};
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, HashAlg, IvGenAlg, WorkLimits};
use std::cell::RefCell;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn valid() -> Vec<u8> {
    let io = MemIo(RefCell::new(Vec::new()));
    let spec = CipherSpec {
        alg: CipherAlg::Aes256,
        mode: CipherMode::Xts,
        ivgen: Some(IvGenAlg::Plain64),
        ivgen_hash: None,
    };
    let mut p = Luks1Params::new(spec, HashAlg::Sha256);
    p.slot_iterations = Some(1000);
    p.mk_iterations = Some(1000);
    let (h, _) = luks1::create(&p, b"pw", &io).unwrap();
    let mut b = io.0.into_inner();
    b.resize(h.payload_offset_bytes() as usize + 4096, 0);
    b
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_str(b: &mut [u8], at: usize, len: usize, s: &[u8]) {
    b[at..at + len].fill(0);
    b[at..at + s.len().min(len)].copy_from_slice(&s[..s.len().min(len)]);
}

const SLOT0: usize = 208;
const SLOT1: usize = 208 + 48;

type Mutation = (&'static str, fn(&mut Vec<u8>), &'static str, &'static str);

#[test]
fn malformed_headers_are_refused_with_typed_errors() {
    let cases: Vec<Mutation> = vec![
        (
            "bad magic",
            |b| b[0] = b'X',
            "ERR_QIMG_WRONG_FORMAT",
            "not in LUKS format",
        ),
        (
            "version 3",
            |b| b[7] = 3,
            "ERR_QIMG_UNSUPPORTED",
            "LUKS version 3",
        ),
        (
            "truncated",
            |b| b.truncate(300),
            "ERR_QIMG_CORRUPT",
            "truncated",
        ),
        (
            "cipher name unterminated",
            |b| b[8..40].fill(b'a'),
            "ERR_QIMG_CORRUPT",
            "cipher name is not NUL terminated",
        ),
        (
            "cipher mode unterminated",
            |b| b[40..72].fill(b'x'),
            "ERR_QIMG_CORRUPT",
            "cipher mode is not NUL terminated",
        ),
        (
            "hash unterminated",
            |b| b[72..104].fill(b's'),
            "ERR_QIMG_CORRUPT",
            "hash specification is not NUL terminated",
        ),
        (
            "uuid unterminated",
            |b| b[168..208].fill(b'1'),
            "ERR_QIMG_CORRUPT",
            "UUID is not NUL terminated",
        ),
        (
            "control characters in name",
            |b| put_str(b, 8, 32, b"a\x01s"),
            "ERR_QIMG_CORRUPT",
            "invalid characters",
        ),
        (
            "unknown cipher",
            |b| put_str(b, 8, 32, b"des"),
            "ERR_QIMG_UNSUPPORTED",
            "cipher name 'des'",
        ),
        (
            "unknown mode",
            |b| put_str(b, 40, 32, b"gcm-plain64"),
            "ERR_QIMG_UNSUPPORTED",
            "cipher mode",
        ),
        (
            "unknown ivgen",
            |b| put_str(b, 40, 32, b"xts-benbi"),
            "ERR_QIMG_UNSUPPORTED",
            "IV generator",
        ),
        (
            "unknown hash",
            |b| put_str(b, 72, 32, b"md5"),
            "ERR_QIMG_UNSUPPORTED",
            "hash algorithm 'md5'",
        ),
        (
            "essiv hash too short for aes",
            |b| put_str(b, 40, 32, b"xts-essiv:sha1"),
            "ERR_QIMG_UNSUPPORTED",
            "ESSIV",
        ),
        (
            "zero key bytes",
            |b| put32(b, 108, 0),
            "ERR_QIMG_CORRUPT",
            "key length 0",
        ),
        (
            "huge key bytes",
            |b| put32(b, 108, 1 << 30),
            "ERR_QIMG_CORRUPT",
            "key length",
        ),
        (
            "key bytes not an AES-XTS size",
            |b| put32(b, 108, 40),
            "ERR_QIMG_UNSUPPORTED",
            "key length 20",
        ),
        (
            "zero mk digest iterations",
            |b| put32(b, 164, 0),
            "ERR_QIMG_CORRUPT",
            "digest iterations",
        ),
        (
            "zero payload offset",
            |b| put32(b, 104, 0),
            "ERR_QIMG_UNSUPPORTED",
            "payload offset is zero",
        ),
        (
            "slot state garbage",
            |b| put32(b, SLOT1, 0x1234),
            "ERR_QIMG_CORRUPT",
            "Keyslot 1 state",
        ),
        (
            "stripes 3999",
            |b| put32(b, SLOT0 + 44, 3999),
            "ERR_QIMG_CORRUPT",
            "stripes 3999 != 4000",
        ),
        (
            "stripes 2^32-1",
            |b| put32(b, SLOT1 + 44, u32::MAX),
            "ERR_QIMG_CORRUPT",
            "Keyslot 1 is corrupted",
        ),
        (
            "key material in the header",
            |b| put32(b, SLOT0 + 40, 1),
            "ERR_QIMG_CORRUPT",
            "overlapping with the LUKS header",
        ),
        (
            "key material past the payload",
            |b| put32(b, SLOT0 + 40, 4000),
            "ERR_QIMG_CORRUPT",
            "overlapping with the encrypted payload",
        ),
        (
            "overlapping key slots",
            |b| put32(b, SLOT1 + 40, 100),
            "ERR_QIMG_CORRUPT",
            "Keyslots 0 and 1 are overlapping",
        ),
        (
            "active slot with zero iterations",
            |b| put32(b, SLOT0 + 4, 0),
            "ERR_QIMG_CORRUPT",
            "zero iterations",
        ),
        (
            "key offset near 2^32",
            |b| put32(b, SLOT1 + 40, u32::MAX - 1),
            "ERR_QIMG_CORRUPT",
            "Keyslot 1 is overlapping with the encrypted payload",
        ),
    ];
    assert!(cases.len() >= 20);
    let good = valid();
    Luks1Header::parse(&good).expect("the unmutated header is valid");
    for (name, mutate, code, msg) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        let e = Luks1Header::parse(&b).expect_err(name);
        assert_eq!(e.code.as_str(), code, "{name}: {}", e.message);
        assert!(e.message.contains(msg), "{name}: {}", e.message);
    }
}

#[test]
fn payload_beyond_the_file_is_refused() {
    let b = valid();
    let h = Luks1Header::parse(&b).unwrap();
    let e = h.check_payload(h.payload_offset_bytes() - 1).unwrap_err();
    assert_eq!(e.code.as_str(), "ERR_QIMG_CORRUPT");
}

#[test]
fn hostile_iteration_counts_are_capped_and_cancellable() {
    let mut b = valid();
    put32(&mut b, SLOT0 + 4, u32::MAX);
    let h = Luks1Header::parse(&b).unwrap();
    let io = MemIo(RefCell::new(b.clone()));
    let t = std::time::Instant::now();
    let e = h.unlock(&io, b"pw", &WorkLimits::default()).unwrap_err();
    assert_eq!(e.code.as_str(), "ERR_QIMG_UNSUPPORTED", "{}", e.message);
    assert!(e.message.contains("iteration count"), "{}", e.message);
    assert!(t.elapsed().as_secs() < 2);
    // Under the cap but cancelled: stops at the next poll.
    let mut b = valid();
    put32(&mut b, SLOT0 + 4, 10_000_000);
    let h = Luks1Header::parse(&b).unwrap();
    let io = MemIo(RefCell::new(b));
    let cancel = Arc::new(AtomicBool::new(true));
    let limits = WorkLimits {
        cancel: Some(cancel),
        ..WorkLimits::default()
    };
    let t = std::time::Instant::now();
    let e = h.unlock(&io, b"pw", &limits).unwrap_err();
    assert_eq!(e.code.as_str(), "ERR_QIMG_ABORTED");
    assert!(t.elapsed().as_secs() < 2);
    // A deadline in the past aborts too.
    let limits = WorkLimits {
        deadline: Some(std::time::Instant::now()),
        ..WorkLimits::default()
    };
    let e = h.unlock(&io, b"pw", &limits).unwrap_err();
    assert_eq!(e.code.as_str(), "ERR_QIMG_ABORTED");
}

#[test]
fn wrong_passphrase_and_slot_management() {
    let b = valid();
    let mut h = Luks1Header::parse(&b).unwrap();
    let io = MemIo(RefCell::new(b));
    let e = h.unlock(&io, b"nope", &WorkLimits::default()).unwrap_err();
    assert_eq!(e.message, "Invalid password, cannot unlock any keyslot");
    let mk = h
        .unlock(&io, b"pw", &WorkLimits::default())
        .unwrap()
        .master_key;
    h.set_slot(&io, 3, &mk, b"second", 1000).unwrap();
    let h2 = Luks1Header::parse(&io.0.borrow()).unwrap();
    let u = h2.unlock(&io, b"second", &WorkLimits::default()).unwrap();
    assert_eq!((u.slot, u.master_key), (3, mk.clone()));
    h.erase_slot(&io, 0).unwrap();
    let h3 = Luks1Header::parse(&io.0.borrow()).unwrap();
    assert!(h3.unlock(&io, b"pw", &WorkLimits::default()).is_err());
    assert_eq!(
        h3.unlock(&io, b"second", &WorkLimits::default())
            .unwrap()
            .master_key,
        mk
    );
}
