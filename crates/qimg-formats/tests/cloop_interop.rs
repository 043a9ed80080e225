//! cloop: QEMU's and create_compressed_fs's samples decode to MANIFEST.md's sha256; images
//! create_compressed_fs writes at test time read back as the source and as qemu-img reads them;
//! hostile headers, offset tables and streams are refused with typed errors, quickly.
mod common;
mod rofmt;
use common::{have_qemu, ok, serial};
use flate2::{write::ZlibEncoder, Compression};
use qimg_core::ErrorCode::{Corrupt, ReadOnly, WrongFormat};
use rofmt::{assert_rejected, file, have, open_ro, read_all, sample, sha256};
use std::io::Write;

const PAYLOAD_SHA: &str = "b60cb9db0c85cf7b22fc79a0dbe5c49d633521ececb4b779d066c16fb8b68625";

#[test]
fn samples_decode_to_manifest_sha() {
    for (name, size, sha) in [
        (
            "qemu-iotests/simple-pattern.cloop",
            1 << 20,
            "7c77af2771e0f86b7ec9707374c7416037fedae45cb0e6e27fbdf55688a5dd12",
        ),
        ("generated/cloop-v2-64k.cloop", 8 << 20, PAYLOAD_SHA),
        ("generated/cloop-v2-4k-7zip.cloop", 8 << 20, PAYLOAD_SHA),
    ] {
        let Some(p) = sample(name) else { return };
        let d = open_ro("cloop", &p).unwrap();
        assert_eq!(d.virtual_size(), size, "{name}");
        assert_eq!(sha256(&read_all(&*d)), sha, "{name}");
    }
}

/// 3 MiB + 1000 bytes (not a whole number of blocks) of mixed data and zeros.
fn payload() -> Vec<u8> {
    let mut v = vec![0u8; (3 << 20) + 1000];
    let mut x = 0x9e37_79b9u32;
    for (i, c) in v.chunks_mut(1024).enumerate() {
        if i % 5 == 2 {
            continue;
        }
        for b in c.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = (x % 16) as u8;
        }
    }
    v
}

#[test]
fn create_compressed_fs_images_read_back() {
    let _g = serial();
    if !have("create_compressed_fs", "cloop-utils") || !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src_bytes = payload();
    let src = file(&dir, "p.raw", &src_bytes);
    for (bs, level) in [("4096", "9"), ("65536", "-1"), ("1048576", "1")] {
        let img = dir.path().join(format!("c{bs}.cloop"));
        let img = img.to_str().unwrap();
        let o = common::run(
            "create_compressed_fs",
            &["-q", "-B", bs, "-L", level, &src, img],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let d = open_ro("cloop", img).unwrap();
        let data = read_all(&*d);
        // The last block is padded with zeros up to the block size.
        assert_eq!(&data[..src_bytes.len()], &src_bytes[..], "-B {bs}");
        assert!(data[src_bytes.len()..].iter().all(|&b| b == 0));
        let q = dir.path().join("q.raw");
        ok(
            "qemu-img",
            &[
                "convert",
                "-f",
                "cloop",
                "-O",
                "raw",
                img,
                q.to_str().unwrap(),
            ],
        );
        assert_eq!(
            data,
            std::fs::read(&q).unwrap(),
            "-B {bs}: qemu-img decodes the same"
        );
        let mut b = vec![0u8; 70_001];
        d.read(4095, &mut b).unwrap();
        assert_eq!(b, data[4095..4095 + b.len()]);
        assert_eq!(d.write(0, &[0u8; 512]).unwrap_err().code, ReadOnly);
    }
}

/// A cloop image from `block_size` and the stored bytes of each block.
fn build(block_size: u32, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let pre = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\nexit $?\n";
    b[..pre.len()].copy_from_slice(pre);
    b.extend(block_size.to_be_bytes());
    b.extend((blocks.len() as u32).to_be_bytes());
    let mut off = 136 + 8 * (blocks.len() as u64 + 1);
    for blk in blocks {
        b.extend(off.to_be_bytes());
        off += blk.len() as u64;
    }
    b.extend(off.to_be_bytes());
    for blk in blocks {
        b.extend(blk);
    }
    b
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn set_be32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_be64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn hostile_images_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let block = zlib(&[7u8; 4096]);
    let good = build(4096, &[block.clone(), block.clone()]);
    let p = file(&dir, "good.cloop", &good);
    assert_eq!(read_all(&*open_ro("cloop", &p).unwrap()), vec![7u8; 8192]);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    // A 64 KiB stream that inflates to 64 MiB of zeros: stopped after one 4 KiB block.
    let bomb = {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
        let z = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&z).unwrap();
        }
        e.finish().unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("block size 0", with(&|b| set_be32(b, 128, 0))),
        (
            "block size not a multiple of 512",
            with(&|b| set_be32(b, 128, 4000)),
        ),
        ("block size 128 MiB", with(&|b| set_be32(b, 128, 128 << 20))),
        ("2^32-1 blocks", with(&|b| set_be32(b, 132, u32::MAX))),
        (
            "offset table past the file",
            with(&|b| set_be32(b, 132, 1 << 20)),
        ),
        (
            "offsets not monotonic",
            with(&|b| set_be64(b, 144, 100_000)),
        ),
        (
            "first offset inside the header",
            with(&|b| set_be64(b, 136, 0)),
        ),
        (
            "offsets past the end of the file",
            with(&|b| {
                let end = 136 + 16 + 2 * block.len() as u64;
                set_be64(b, 152, end + 4096);
            }),
        ),
        (
            "compressed block over twice the block size",
            build(4096, &[vec![0u8; 9000]]),
        ),
        ("decompression bomb", build(4096, &[bomb])),
        (
            "stream shorter than a block",
            build(4096, &[zlib(&[1u8; 100])]),
        ),
        ("garbage stream", build(4096, &[vec![0x55u8; 200]])),
        (
            "truncated stream",
            build(4096, &[block[..block.len() / 2].to_vec()]),
        ),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let p = file(&dir, &format!("h{i}.cloop"), &bytes);
        assert_rejected("cloop", &p, &[Corrupt], what);
    }
    let p = file(&dir, "v1.cloop", &with(&|b| b[12] = b'1'));
    assert_rejected("cloop", &p, &[WrongFormat], "not V2.0");
}
