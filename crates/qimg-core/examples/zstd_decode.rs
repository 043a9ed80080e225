//! The Rust side of `benches/zstd-clusters.mjs`: decode length-prefixed zstd frames (one 64 KiB
//! qcow2 cluster each) with one reused decompression context, and print the throughput.
//!
//! Usage: `cargo run --release -p qimg-core --example zstd_decode -- FRAMES_FILE CLUSTER_SIZE ROUNDS`
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("frames file");
    let cluster: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(65536);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut frames = Vec::new();
    let mut p = 0;
    while p + 4 <= data.len() {
        let n = u32::from_le_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
        frames.push(&data[p + 4..p + 4 + n]);
        p += 4 + n;
    }
    let mut ctx = zstd::bulk::Decompressor::new().expect("context");
    let mut out = vec![0u8; cluster];
    let mut best = f64::MAX;
    let mut check = 0u64;
    for _ in 0..rounds {
        let t = Instant::now();
        for f in &frames {
            let n = ctx.decompress_to_buffer(f, &mut out).expect("decode");
            check = check.wrapping_add(out[n - 1] as u64);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mb = (frames.len() * cluster) as f64 / 1e6;
    println!(
        "{{\"clusters\":{},\"seconds\":{best:.4},\"MBps\":{:.0},\"check\":{check}}}",
        frames.len(),
        mb / best
    );
}
