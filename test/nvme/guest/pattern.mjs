/**
 * Deterministic test data shared by the NVMe guest scripts and the host-side tests: byte `i` of
 * pattern `seed` depends on both, so misplaced or stale blocks never compare equal.
 */

/**
 * `length` bytes of pattern `seed`.
 * @param {number} seed
 * @param {number} length
 * @returns {Buffer}
 */
export function pattern(seed, length) {
  const b = Buffer.allocUnsafe(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 255;
  }
  return b;
}

const MiB = 1 << 20;

/** The write/read cases of the driver test: [offset, length, seed], non-overlapping, 8–40 MiB. */
export function driverCases() {
  const sizes = [
    512,
    1024,
    4096,
    4608,
    8192,
    8704,
    12288,
    16896,
    65536,
    131072,
    131584,
    262144,
    524288,
    524800,
    MiB,
    2 * MiB + 1536,
    3 * MiB,
  ];
  const cases = [];
  let cursor = 8 * MiB;
  sizes.forEach((len, k) => {
    const offset = cursor + 512 * (k % 7);
    cases.push([offset, len, 100 + k]);
    cursor = Math.ceil((offset + len + 4096) / 4096) * 4096;
  });
  return cases;
}

/** Regions the driver test uses (bytes). */
export const REGIONS = {
  hostPattern: [0, MiB],
  zeroes: [41 * MiB, MiB],
  zeroesDealloc: [43 * MiB, MiB],
  dsm: [45 * MiB, 2 * MiB],
  parallelBase: 48 * MiB,
  unaligned: [50 * MiB + 123, 1000],
  storageWrite: [52 * MiB + 7, 300000],
  zeroCopy: [56 * MiB, 2 * MiB],
  batchBase: 62 * MiB,
  syncIo: [24 * MiB, MiB],
  bench: [28 * MiB, 2 * MiB],
};
