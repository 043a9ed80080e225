/** Sizes as qemu-img takes them: `qemu_strtosz` with k/K, M, G, T, P, E suffixes (powers of 1024). */
import { QimgError } from "../errors.js";

const SUFFIX: Record<string, number> = {
  "": 1,
  b: 1,
  B: 1,
  k: 2 ** 10,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
  P: 2 ** 50,
  E: 2 ** 60,
};

/**
 * Parse a size. A bare number is in bytes (or in `defaultUnit`); decimals are allowed with a
 * suffix (`1.5G`), as QEMU allows; negative, empty, and overflowing values are rejected.
 */
export function parseSize(s: string, defaultUnit = 1): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bBkKMGTPE]?)$/.exec(s);
  if (!m) throw invalid(s);
  const [, num, suffix] = m;
  const unit = suffix === "" ? defaultUnit : SUFFIX[suffix];
  if (num.includes(".") && unit === 1) throw invalid(s);
  const v = Number(num) * unit;
  if (!Number.isFinite(v) || v > Number.MAX_SAFE_INTEGER) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Value '${s}' is out of range`);
  }
  return Math.floor(v);
}

function invalid(s: string): QimgError {
  return new QimgError(
    "ERR_QIMG_INVALID_ARGUMENT",
    `Invalid size '${s}': you may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`,
  );
}
