//! dmg: every sample decodes to MANIFEST.md's sha256 (zlib, raw, ADC, bzip2, LZFSE, GPT, the
//! not-really-encrypted one); UDIF images built at test time with every chunk type read back as
//! their source and as 7-Zip (`7zz -tDmg`) and, for zlib-only images, qemu-img decode them;
//! encrypted images and hostile tables are refused with typed errors, quickly.
mod common;
mod rofmt;
use common::{have_qemu, ok, serial};
use qimg_core::ErrorCode::{Corrupt, ReadOnly, Unsupported, WrongFormat};
use rofmt::{assert_rejected, file, have, open_ro, read_all, sample, sha256};
use std::io::Write;

#[test]
fn samples_decode_to_manifest_sha() {
    let five = "0786ad1fdcba31a3f03ee80eb1d6e8c7ee2f4647a2b4b6f1855c9fe0719784de";
    for (name, size, sha) in [
        (
            "qemu-iotests/simple-dmg.dmg",
            1799168,
            "20647e0a98a830a6a250b91e0e6d7200a872caea07b87a3c19611f3dd031c9df",
        ),
        ("node-udif/compression-adc.dmg", 5242880, five),
        ("node-udif/compression-bz2.dmg", 5242880, five),
        ("node-udif/compression-lzfse.dmg", 5242880, five),
        ("node-udif/compression-raw.dmg", 5242880, five),
        ("node-udif/compression-zlib.dmg", 5242880, five),
        (
            "node-udif/encrypted.dmg",
            9379840,
            "7adf6e58e93f35e9506964c4b672a8f539e6de6963c62d89d64641f16eec55c9",
        ),
        (
            "node-udif/gpt.dmg",
            9379840,
            "8a091a4d2f9ad790315d88e3666d81c71a674736e827e0b8410eb257d0a38724",
        ),
        (
            "node-udif/raw.dmg",
            2342912,
            "2deccfded5012b341726df88ea00d71e4ac6b8fbf93bf157885269b42d61b910",
        ),
        (
            "node-udif/zlib-compressed.dmg",
            9400320,
            "308bcbc833f18ef17c01a3e6798c6de475329710168bd5d3d1cf89f9501b8930",
        ),
    ] {
        let Some(p) = sample(name) else { return };
        let d = open_ro("dmg", &p).unwrap();
        assert_eq!(d.virtual_size(), size, "{name}");
        assert_eq!(sha256(&read_all(&*d)), sha, "{name}");
        assert_eq!(d.write(0, &[0u8; 512]).unwrap_err().code, ReadOnly);
        if have("7zz", "7zip") {
            let o = common::run("7zz", &["e", "-so", "-tDmg", &p]);
            assert_eq!(sha256(&o.stdout), sha, "{name}: 7zz -tDmg agrees");
        }
    }
}

/// One chunk to build: type and the guest bytes it stands for.
struct Part {
    kind: u32,
    data: Vec<u8>,
}

fn compress(kind: u32, data: &[u8]) -> Vec<u8> {
    match kind {
        0 | 2 => Vec::new(),
        1 => data.to_vec(),
        0x8000_0004 => {
            // ADC: literal runs of up to 128 bytes, plus a short and a long match when the data
            // repeats (it does in `guest()` below).
            let mut out = Vec::new();
            let mut i = 0;
            while i < data.len() {
                if i >= 512
                    && data[i..].starts_with(&data[i - 512..i - 512 + 36])
                    && i + 36 <= data.len()
                {
                    // long match: 36 bytes, distance 512
                    out.extend([0x40 | (36 - 4) as u8, 0x01, 0xff]);
                    i += 36;
                    continue;
                }
                if i >= 8 && i + 10 <= data.len() && data[i..i + 10] == data[i - 8..i + 2] {
                    // short match: 10 bytes, distance 8 (overlapping copy)
                    out.extend([((10 - 3) << 2) as u8, 7]);
                    i += 10;
                    continue;
                }
                let n = (data.len() - i).min(128);
                out.push(0x80 | (n - 1) as u8);
                out.extend(&data[i..i + n]);
                i += n;
            }
            out
        }
        0x8000_0005 => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        0x8000_0006 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        0x8000_0007 => {
            let mut out = Vec::new();
            lzfse_rust::encode_bytes(data, &mut out).unwrap();
            out
        }
        0x8000_0008 => {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut &data[..], &mut out).unwrap();
            out
        }
        _ => unreachable!(),
    }
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn be64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// A UDIF image: the stored chunks, one mish table in an XML plist, the koly trailer. `stored`
/// overrides a chunk's stored bytes (for hostile images).
fn build(parts: &[Part], patch: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut img = Vec::new();
    let mut mish = Vec::new();
    mish.extend(b"mish");
    mish.extend(be32(1));
    mish.extend(be64(0));
    let sectors: u64 = parts.iter().map(|p| p.data.len() as u64 / 512).sum();
    mish.extend(be64(sectors));
    mish.extend(be64(0));
    mish.extend(be32(0));
    mish.extend(be32(0));
    mish.extend([0u8; 24]);
    mish.extend([0u8; 136]);
    mish.extend(be32(parts.len() as u32 + 1));
    let mut sector = 0u64;
    for p in parts {
        let stored = compress(p.kind, &p.data);
        mish.extend(be32(p.kind));
        mish.extend(be32(0));
        mish.extend(be64(sector));
        mish.extend(be64(p.data.len() as u64 / 512));
        mish.extend(be64(img.len() as u64));
        mish.extend(be64(stored.len() as u64));
        sector += p.data.len() as u64 / 512;
        img.extend(stored);
    }
    mish.extend(be32(0xffff_ffff));
    mish.extend(be32(0));
    mish.extend(be64(sector));
    mish.extend(be64(0));
    mish.extend(be64(img.len() as u64));
    mish.extend(be64(0));
    patch(&mut mish);
    let b64 = base64(&mish);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n\t<key>resource-fork</key>\n\t<dict>\n\t\t<key>blkx</key>\n\t\t<array>\n\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n\t\t\t\t<key>CFName</key>\n\t\t\t\t<string>whole disk (qimg : 0)</string>\n\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n\t\t\t\t{b64}\n\t\t\t\t</data>\n\t\t\t\t<key>ID</key>\n\t\t\t\t<string>0</string>\n\t\t\t\t<key>Name</key>\n\t\t\t\t<string>whole disk (qimg : 0)</string>\n\t\t\t</dict>\n\t\t</array>\n\t</dict>\n</dict>\n</plist>\n"
    );
    let data_len = img.len() as u64;
    let xml_off = img.len() as u64;
    img.extend(xml.as_bytes());
    let mut koly = vec![0u8; 512];
    koly[..4].copy_from_slice(b"koly");
    koly[4..8].copy_from_slice(&be32(4));
    koly[8..12].copy_from_slice(&be32(512));
    koly[12..16].copy_from_slice(&be32(1));
    koly[32..40].copy_from_slice(&be64(data_len));
    koly[216..224].copy_from_slice(&be64(xml_off));
    koly[224..232].copy_from_slice(&be64(xml.len() as u64));
    koly[488..492].copy_from_slice(&be32(1));
    koly[492..500].copy_from_slice(&be64(sector));
    img.extend(koly);
    img
}

fn base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Guest bytes with repeats (for ADC matches) and variety.
fn guest(len: usize, seed: u32) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed | 1;
    for (i, b) in v.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = if (i / 512) % 2 == 0 {
            (i % 8) as u8 + b'a'
        } else {
            (x % 7) as u8
        };
    }
    v
}

fn all_kinds() -> Vec<Part> {
    [
        0u32,
        1,
        2,
        0x8000_0004,
        0x8000_0005,
        0x8000_0006,
        0x8000_0007,
        0x8000_0008,
    ]
    .iter()
    .enumerate()
    .map(|(i, &kind)| Part {
        kind,
        data: if kind == 0 || kind == 2 {
            vec![0u8; 8192]
        } else {
            guest(64 * 1024 + 512 * i, i as u32 + 7)
        },
    })
    .collect()
}

#[test]
fn built_images_read_back_and_7zip_agrees() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let parts = all_kinds();
    let want: Vec<u8> = parts.iter().flat_map(|p| p.data.clone()).collect();
    let img = file(&dir, "all.img", &build(&parts, &|_| {}));
    // Probing by content: the name does not end in .dmg.
    assert_eq!(
        qimg_formats::dmg::probe(&std::fs::read(&img).unwrap(), &img),
        100
    );
    let d = open_ro("dmg", &img).unwrap();
    assert_eq!(read_all(&*d), want);
    let mut b = vec![0u8; 100_003];
    d.read(5_000, &mut b).unwrap();
    assert_eq!(b, want[5_000..105_003]);
    if have("7zz", "7zip") {
        let o = common::run("7zz", &["e", "-so", "-tDmg", &img]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // 7-Zip skips nothing: its output is the whole disk.
        assert_eq!(o.stdout, want, "7zz -tDmg decodes the same");
    }
}

#[test]
fn zlib_image_matches_qemu_img() {
    let _g = serial();
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<Part> = (0..3)
        .map(|i| Part {
            kind: if i == 1 { 0 } else { 0x8000_0005 },
            data: if i == 1 {
                vec![0u8; 4096]
            } else {
                guest(32768, i)
            },
        })
        .collect();
    let img = file(&dir, "z.dmg", &build(&parts, &|_| {}));
    let q = dir.path().join("q.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "dmg",
            "-O",
            "raw",
            &img,
            q.to_str().unwrap(),
        ],
    );
    assert_eq!(
        read_all(&*open_ro("dmg", &img).unwrap()),
        std::fs::read(&q).unwrap()
    );
}

#[test]
fn hostile_images_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let one = |kind: u32, data: Vec<u8>| vec![Part { kind, data }];
    let zl = |n: usize| one(0x8000_0005, guest(n, 3));
    // Offsets into the mish table: chunk 0 starts at 204.
    let c0 = 204;
    let set64 =
        |o: usize, v: u64| move |m: &mut Vec<u8>| m[o..o + 8].copy_from_slice(&v.to_be_bytes());
    let set32 =
        |o: usize, v: u32| move |m: &mut Vec<u8>| m[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let bomb = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let z = vec![0u8; 1 << 20];
        for _ in 0..32 {
            e.write_all(&z).unwrap();
        }
        e.finish().unwrap()
    };
    // The bomb's first sectors stored as a "zlib" chunk of as many sectors: it inflates past them.
    let bomb_img = build(
        &one(1, bomb[..bomb.len() / 512 * 512].to_vec()),
        &set32(c0, 0x8000_0005),
    );
    let cases: Vec<(&str, Vec<u8>, qimg_core::ErrorCode)> = vec![
        ("no koly", vec![0u8; 4096], WrongFormat),
        ("shorter than a trailer", vec![0u8; 100], WrongFormat),
        (
            "plist of 1 GiB",
            {
                let mut b = build(&zl(4096), &|_| {});
                let n = b.len();
                b[n - 512 + 224..n - 512 + 232].copy_from_slice(&(1u64 << 30).to_be_bytes());
                b
            },
            Corrupt,
        ),
        (
            "plist past the end",
            {
                let mut b = build(&zl(4096), &|_| {});
                let n = b.len();
                b[n - 512 + 216..n - 512 + 224].copy_from_slice(&(n as u64).to_be_bytes());
                b
            },
            Corrupt,
        ),
        (
            "chunk count beyond the table",
            build(&zl(4096), &set32(200, 1_000_000)),
            Corrupt,
        ),
        (
            "chunk of 128 MiB",
            build(&zl(4096), &set64(c0 + 16, 1 << 18)),
            Corrupt,
        ),
        (
            "stored length over 64 MiB",
            build(&zl(4096), &set64(c0 + 32, 100 << 20)),
            Corrupt,
        ),
        (
            "stored bytes past the file",
            build(&zl(4096), &set64(c0 + 24, 1 << 40)),
            Corrupt,
        ),
        (
            "sector overflow",
            build(&zl(4096), &set64(c0 + 8, u64::MAX - 1)),
            Corrupt,
        ),
        (
            "unknown chunk type",
            build(&zl(4096), &set32(c0, 0x1234)),
            Corrupt,
        ),
        (
            "unsupported compression",
            build(&zl(4096), &set32(c0, 0x8000_0003)),
            Unsupported,
        ),
        (
            "overlapping chunks",
            build(
                &[
                    Part {
                        kind: 0x8000_0005,
                        data: guest(4096, 1),
                    },
                    Part {
                        kind: 0,
                        data: vec![0; 4096],
                    },
                ],
                &set64(c0 + 40 + 8, 2),
            ),
            Corrupt,
        ),
        (
            "raw chunk shorter than its sectors",
            build(&one(1, guest(4096, 1)), &set64(c0 + 32, 100)),
            Corrupt,
        ),
        ("zlib decompression bomb", bomb_img, Corrupt),
        (
            "zlib stream shorter than the chunk",
            build(&zl(4096), &set64(c0 + 16, 16)),
            Corrupt,
        ),
        (
            "garbage bzip2",
            build(&one(1, guest(4096, 1)), &set32(c0, 0x8000_0006)),
            Corrupt,
        ),
        (
            "garbage LZFSE",
            build(&one(1, guest(4096, 1)), &set32(c0, 0x8000_0007)),
            Corrupt,
        ),
        (
            "garbage LZMA",
            build(&one(1, guest(4096, 1)), &set32(c0, 0x8000_0008)),
            Corrupt,
        ),
        (
            "ADC match before the chunk",
            build(&one(1, vec![0x40; 4096]), &set32(c0, 0x8000_0004)),
            Corrupt,
        ),
        (
            "not a mish table",
            build(&zl(4096), &|m| m[0] = b'X'),
            Corrupt,
        ),
        (
            "encrypted (v2 header)",
            {
                let mut b = build(&zl(4096), &|_| {});
                b[..8].copy_from_slice(b"encrcdsa");
                b
            },
            Unsupported,
        ),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let p = file(&dir, &format!("h{i}.dmg"), &bytes);
        assert_rejected("dmg", &p, &[code], what);
    }
    // Bombs in every codec: 4 MiB of zeros stored for a chunk of 8 sectors.
    for kind in [0x8000_0004u32, 0x8000_0006, 0x8000_0007, 0x8000_0008] {
        let img = build(&one(kind, vec![0u8; 4 << 20]), &set64(c0 + 16, 8));
        let p = file(&dir, &format!("bomb{kind:x}.dmg"), &img);
        assert_rejected("dmg", &p, &[Corrupt], &format!("{kind:#x} bomb"));
    }
}

#[test]
fn decoders_survive_mutated_streams() {
    // Valid streams of every compressed type with bytes flipped, cut or extended: each decode
    // ends in Ok or a typed error, never a panic, and quickly.
    let data = guest(64 * 1024, 11);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t = std::time::Instant::now();
    for kind in [
        0x8000_0004u32,
        0x8000_0005,
        0x8000_0006,
        0x8000_0007,
        0x8000_0008,
    ] {
        let good = compress(kind, &data);
        let mut dst = vec![0u8; data.len()];
        qimg_formats::dmg::compress::decode(kind, &good, &mut dst, 0).unwrap();
        assert_eq!(dst, data, "{kind:#x}");
        for round in 0..150 {
            let mut bad = good.clone();
            match round % 3 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() as usize) % bad.len();
                        bad[i] ^= 1 << (next() % 8);
                    }
                }
                1 => bad.truncate((next() as usize) % bad.len()),
                _ => bad.extend((0..next() % 64).map(|_| next() as u8)),
            }
            let r = qimg_formats::dmg::compress::decode(kind, &bad, &mut dst, 0);
            if let Err(e) = r {
                assert_eq!(
                    e.code,
                    qimg_core::ErrorCode::Corrupt,
                    "{kind:#x}: {}",
                    e.message
                );
            }
        }
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn resource_fork_images_without_a_plist_read_back() {
    // Old UDIF images keep the blkx tables in a binary resource fork: header (data offset, map
    // offset, data length, map length), then each resource as a u32 length and its bytes.
    let dir = tempfile::tempdir().unwrap();
    let parts = all_kinds();
    let want: Vec<u8> = parts.iter().flat_map(|p| p.data.clone()).collect();
    let img = build(&parts, &|_| {});
    // Take the mish table back out of the XML image and rebuild the tail as a resource fork.
    let n = img.len();
    let koly = &img[n - 512..];
    let xml_off = u64::from_be_bytes(koly[216..224].try_into().unwrap()) as usize;
    let xml = std::str::from_utf8(&img[xml_off..n - 512]).unwrap();
    let a = xml.find("<data>").unwrap() + 6;
    let b = xml.find("</data>").unwrap();
    let mish = unbase64(&xml[a..b]);
    let mut out = img[..xml_off].to_vec();
    let rsrc_off = out.len() as u64;
    let mut fork = Vec::new();
    fork.extend(be32(256));
    fork.extend(be32(0));
    fork.extend(be32(4 + mish.len() as u32 + 4 + 3));
    fork.extend(be32(0));
    fork.resize(256, 0);
    fork.extend(be32(mish.len() as u32));
    fork.extend(&mish);
    fork.extend(be32(3)); // a resource that is not a mish table: skipped
    fork.extend(b"abc");
    out.extend(&fork);
    let mut k = koly.to_vec();
    k[40..48].copy_from_slice(&be64(rsrc_off));
    k[48..56].copy_from_slice(&be64(fork.len() as u64));
    k[216..232].fill(0);
    out.extend(k);
    let p = file(&dir, "rsrc.dmg", &out);
    assert_eq!(read_all(&*open_ro("dmg", &p).unwrap()), want);
}

fn unbase64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
