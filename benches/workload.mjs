/**
 * The benchmark workload: a raw image of N bytes (default 4 GiB) made of 1 MiB blocks, chosen
 * with a fixed seed: ≈40% zeros (half written as zero bytes, half left as holes), ≈30%
 * compressible text-like data, ≈30% random bytes. Same seed, same file.
 */

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const BLOCK = 1 << 20;

/** A small deterministic PRNG (xorshift32). */
export function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Write the workload to `path` unless a file of that size is already there. */
export function makeWorkload(path, size = 4 * 1024 ** 3, seed = 20261125) {
  if (existsSync(path) && statSync(path).size === size) return path;
  const next = rng(seed);
  const fd = openSync(path, "w");
  ftruncateSync(fd, size);
  const block = Buffer.alloc(BLOCK);
  const words = ["qemu ", "block ", "cluster ", "image ", "refcount ", "sector ", "0000 ", "data "];
  for (let off = 0; off < size; off += BLOCK) {
    const kind = next() % 100;
    if (kind < 20) continue; // hole
    if (kind < 40) {
      block.fill(0);
    } else if (kind < 70) {
      let p = 0;
      while (p < BLOCK) {
        const w = words[next() % words.length];
        p += block.write(w, p);
      }
    } else {
      for (let p = 0; p < BLOCK; p += 4) block.writeUInt32LE(next(), p);
    }
    writeSync(fd, block, 0, BLOCK, off);
  }
  closeSync(fd);
  return path;
}

/** sha256 of a small buffer, for sanity prints. */
export const sha = (b) => createHash("sha256").update(b).digest("hex");

const here = dirname(fileURLToPath(import.meta.url));

/** The qimg CLI as an argv prefix (the built `dist/cli/main.js`). */
export const qimgCli = [process.execPath, join(here, "..", "dist", "cli", "main.js")];

/**
 * The options every benchmark takes: `--size N[K|M|G]` (default 4G) and `--dir` (default
 * benches/work, created), plus `opt(name, default)` for script-specific ones.
 */
export function benchArgs(argv = process.argv.slice(2)) {
  const opt = (name, def) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : def;
  };
  const units = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
  const sizeArg = opt("size", "4G");
  const size = Number.parseInt(sizeArg, 10) * (units[sizeArg.slice(-1).toUpperCase()] ?? 1);
  const dir = resolve(opt("dir", join(here, "work")));
  mkdirSync(dir, { recursive: true });
  return { size, dir, opt };
}

/** Settle the page cache: write back everything, then drop it where permitted. */
export function settle() {
  spawnSync("sync");
  try {
    writeFileSync("/proc/sys/vm/drop_caches", "3");
  } catch {
    // not root, or not permitted: a warm cache for every tool alike
  }
}

/** Run `argv` under GNU time after settling the cache: seconds, seconds with a trailing `sync`, peak RSS (KiB). */
export function timed(argv) {
  settle();
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8" });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  spawnSync("sync");
  const synced = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  return { secs, synced, rss: Number(r.stderr.trim().split("\n").pop()) };
}

/** The best (fastest) of `runs` timings of `argv`, removing `out` before each run. */
export function best(argv, out, runs = 1) {
  let b;
  for (let i = 0; i < runs; i++) {
    rmSync(out, { force: true });
    const r = timed(argv);
    if (!b || r.secs < b.secs) b = r;
  }
  return b;
}

/**
 * Time `qemu-img convert` and `qimg convert` on each path `{ name, f, O, in }` (source format,
 * output format, source file) and print one table: seconds, MB/s over `size`, peak RSS, seconds
 * with a trailing `sync`, and the ratio qimg/qemu-img against qemu-img's plain and synced times
 * (qimg's jobs end durable; qemu-img convert issues no flush). Each output is checked with
 * `qemu-img compare` and flagged when it differs. `variants` (`{ label, args }`) add qimg rows
 * with extra convert arguments (e.g. `-t none`).
 */
export function convertTable(paths, { src, dir, size, runs = 1, variants = [] }) {
  const mb = size / 1e6;
  const w = Math.max(11, ...paths.map((p) => p.name.length)) + 1;
  console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
  console.log(
    `${"path".padEnd(w)} tool      seconds   MB/s  peak RSS MiB  +sync s   ratio vs qemu-img / vs qemu-img+sync`,
  );
  const row = (t, r) =>
    `${t.padEnd(Math.max(9, ...variants.map((v) => v.label.length)))} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(12)} ${r.synced.toFixed(2).padStart(8)}`;
  for (const p of paths) {
    const out = join(dir, `out.${p.O}`);
    const q = best(["qemu-img", "convert", "-f", p.f, "-O", p.O, p.in, out], out, runs);
    const m = best([...qimgCli, "convert", "-f", p.f, "-O", p.O, p.in, out], out, runs);
    const cmp = spawnSync("qemu-img", ["compare", "-f", p.f, "-F", p.O, p.in, out]);
    const ratio = `${(m.secs / q.secs).toFixed(2)} / ${(m.secs / q.synced).toFixed(2)}`;
    console.log(`${p.name.padEnd(w)} ${row("qemu-img", q)}`);
    console.log(
      `${"".padEnd(w)} ${row("qimg", m)}   ${ratio}${cmp.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`,
    );
    for (const v of variants) {
      const n = best([...qimgCli, "convert", ...v.args, "-f", p.f, "-O", p.O, p.in, out], out, runs);
      const c = spawnSync("qemu-img", ["compare", "-f", p.f, "-F", p.O, p.in, out]);
      const r = `${(n.secs / q.secs).toFixed(2)} / ${(n.secs / q.synced).toFixed(2)}`;
      console.log(`${"".padEnd(w)} ${row(v.label, n)}   ${r}${c.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`);
    }
    rmSync(out, { force: true });
  }
}
