//! The Rust side of benches/crypto.mjs: AES-256-XTS (512-bit key, plain64) encrypt and decrypt
//! throughput of [`qimg_crypto::SectorCipher`] on one thread, over a buffer of `--buf` bytes
//! (default 4 MiB, like one convert chunk) for about `--seconds` each. Prints one JSON line with
//! rates per wall-clock second and per CPU second of this thread (`openssl speed` divides by CPU
//! time, so on a shared machine the CPU-time rate is the one to compare). `--generic` forces the
//! generic three-pass XTS path, `--no-vaes` the fused loop over the `aes` crate (what CPUs
//! without VAES run), `--vaes256` the AVX2 VAES kernel, for comparison with the VAES-512 one.
use qimg_crypto::{CipherAlg, CipherMode, CipherSpec, IvGenAlg, SectorCipher};
use std::time::Instant;

fn arg(name: &str, default: f64) -> f64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds used by this thread so far.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let buf_len = arg("--buf", 4.0 * 1048576.0) as usize / 512 * 512;
    let secs = arg("--seconds", 2.0);
    let spec = CipherSpec {
        alg: CipherAlg::Aes256,
        mode: CipherMode::Xts,
        ivgen: Some(IvGenAlg::Plain64),
        ivgen_hash: None,
    };
    let key: Vec<u8> = (0..64u8).collect();
    let generic = std::env::args().any(|a| a == "--generic");
    let mut c = SectorCipher::new(spec, &key, 512).expect("cipher");
    if generic {
        c = c.generic_path();
    }
    if std::env::args().any(|a| a == "--no-vaes") {
        c = c.without_vaes();
    }
    if std::env::args().any(|a| a == "--vaes256") {
        c = c.vaes256();
    }
    let mut buf = vec![0x5au8; buf_len];
    let mut rate = |enc: bool| {
        let start = Instant::now();
        let cpu0 = thread_cpu();
        let mut bytes = 0u64;
        let mut sector = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            if enc {
                c.encrypt(sector, &mut buf).expect("encrypt");
            } else {
                c.decrypt(sector, &mut buf).expect("decrypt");
            }
            sector += (buf_len / 512) as u64;
            bytes += buf_len as u64;
        }
        let wall = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
        let cpu = bytes as f64 / (thread_cpu() - cpu0).max(1e-9) / 1e6;
        (wall, cpu)
    };
    let (e, ec) = rate(true);
    let (d, dc) = rate(false);
    println!(
        "{{\"encrypt_mb_s\":{e:.1},\"decrypt_mb_s\":{d:.1},\"encrypt_cpu_mb_s\":{ec:.1},\"decrypt_cpu_mb_s\":{dc:.1},\"aesni\":{},\"vaes\":{},\"avx512f\":{},\"generic\":{generic},\"buf\":{buf_len},\"kernel\":\"{}\"}}",
        std::arch::is_x86_feature_detected!("aes"),
        std::arch::is_x86_feature_detected!("vaes"),
        std::arch::is_x86_feature_detected!("avx512f"),
        c.xts_kernel()
    );
}
