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
