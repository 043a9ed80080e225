#!/usr/bin/env node
/**
 * zstd-napi vs a Rust zstd decode on 64 KiB qcow2-style clusters, in one run.
 *
 * zstd-napi is named by the design card; this measures whether it should carry qcow2's zstd
 * clusters. It needs its native build (npm 11 blocks its install script unless allowed), so the
 * script installs it into benches/work/zstd-napi on first use. Prints MB/s for each and the
 * ratio; the decision is recorded in ARCHITECTURE.md. Not a test.
 *
 * Usage: node benches/zstd-clusters.mjs [--clusters 8192]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { rng } from "./workload.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const work = join(here, "work", "zstd-napi");
const args = process.argv.slice(2);
const count = Number(args[args.indexOf("--clusters") + 1] || 8192) || 8192;
const CLUSTER = 65536;

mkdirSync(work, { recursive: true });
if (!existsSync(join(work, "node_modules", "zstd-napi", "build", "Release", "binding.node"))) {
  writeFileSync(join(work, "package.json"), '{"name":"zstd-bench","private":true}');
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--foreground-scripts", "zstd-napi@0.0.13"], {
    cwd: work,
    stdio: "inherit",
  });
}
const zstd = createRequire(join(work, "package.json"))("zstd-napi");

// Clusters like a disk image's: half text-like, a quarter runs, a quarter random (fixed seed).
const rnd = rng(12345);
const words = ["qemu ", "cluster ", "refcount ", "0000 ", "block ", "image "];
const frames = [];
for (let i = 0; i < count; i++) {
  const b = Buffer.alloc(CLUSTER);
  const kind = i % 4;
  if (kind < 2) for (let p = 0; p < CLUSTER; ) p += b.write(words[rnd() % words.length], p);
  else if (kind === 2) b.fill(rnd() & 0xff);
  else for (let p = 0; p < CLUSTER; p += 4) b.writeUInt32LE(rnd(), p);
  frames.push(zstd.compress(b, { compressionLevel: 3 }));
}
const file = join(work, "frames.bin");
writeFileSync(
  file,
  Buffer.concat(frames.flatMap((f) => [Buffer.from(new Uint32Array([f.length]).buffer), f])),
);

let best = Number.POSITIVE_INFINITY;
for (let r = 0; r < 5; r++) {
  const t = process.hrtime.bigint();
  for (const f of frames) zstd.decompress(f);
  best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9);
}
const napiMBps = (count * CLUSTER) / 1e6 / best;
const rust = spawnSync(
  "cargo",
  [
    "run",
    "--quiet",
    "--release",
    "-p",
    "qimg-core",
    "--example",
    "zstd_decode",
    "--",
    file,
    String(CLUSTER),
    "5",
  ],
  {
    encoding: "utf8",
    cwd: join(here, ".."),
  },
);
if (rust.status !== 0) throw new Error(rust.stderr);
const r = JSON.parse(rust.stdout.trim());
console.log(`clusters: ${count} × 64 KiB (${((count * CLUSTER) / 2 ** 20).toFixed(0)} MiB), best of 5`);
console.log(
  `zstd-napi decompress (calling thread, one call per cluster): ${best.toFixed(3)} s, ${napiMBps.toFixed(0)} MB/s`,
);
console.log(
  `Rust zstd (reused context, one thread):                      ${r.seconds.toFixed(3)} s, ${r.MBps} MB/s`,
);
console.log(`ratio Rust/zstd-napi throughput: ${(r.MBps / napiMBps).toFixed(2)}`);
