/**
 * The benchmark workload: a raw image of N bytes (default 4 GiB) made of 1 MiB blocks, chosen
 * with a fixed seed: ≈40% zeros (half written as zero bytes, half left as holes), ≈30%
 * compressible text-like data, ≈30% random bytes. Same seed, same file.
 */
import { createHash } from "node:crypto";
import { closeSync, existsSync, ftruncateSync, openSync, statSync, writeSync } from "node:fs";

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
