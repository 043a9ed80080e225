/**
 * Sizes as qemu-img reads them (`qemu_strtosz`): a decimal integer, an optional fraction, and an
 * optional suffix b/B, k/K, M, G, T, P, E (case-insensitive, powers of 1024); `0x` hex without
 * fraction or suffix; leading blanks and `+` allowed; the result is rounded to the nearest byte.
 */
import { QimgError } from "../errors.js";

/** A size suffix: bytes, or a power of 1024 (or 1000 for metric parsing). */
export type SizeSuffix = "B" | "K" | "M" | "G" | "T" | "P" | "E";

/** Why a size was refused: not a size at all, or out of range. */
export type SizeErrorKind = "invalid" | "range";

/** The error thrown for a bad size; `kind` tells a syntax error from an overflow. */
export class SizeError extends QimgError {
  /** `invalid` (qemu's -EINVAL) or `range` (qemu's -ERANGE). */
  readonly kind: SizeErrorKind;
  constructor(kind: SizeErrorKind, message: string) {
    super("ERR_QIMG_INVALID_ARGUMENT", message);
    this.kind = kind;
  }
}

/** Largest value qemu-img's `cvtnum` accepts (INT64_MAX). */
export const INT64_MAX = 0x7fff_ffff_ffff_ffffn;
const TWO64 = 1n << 64n;
const EXPONENT: Record<string, number> = { B: 0, K: 1, M: 2, G: 3, T: 4, P: 5, E: 6 };
const SPACE = /^[ \t\n\v\f\r]*/;

function suffixMul(c: string | undefined, unit: bigint): bigint | undefined {
  const e = c === undefined ? undefined : EXPONENT[c.toUpperCase()];
  return e === undefined ? undefined : unit ** BigInt(e);
}

/**
 * Parse a size exactly as `qemu_strtosz` does, as a bigint (0 … 2^64-1). A bare number is in
 * `defaultSuffix` units (bytes unless told). Throws {@link SizeError}.
 */
export function parseSizeBig(s: string, defaultSuffix: SizeSuffix = "B", unit: 1024 | 1000 = 1024): bigint {
  const u = BigInt(unit);
  const invalid = (): SizeError => new SizeError("invalid", `Invalid size specified: '${s}'.`);
  const range = (): SizeError => new SizeError("range", `Size '${s}' is out of range.`);
  let i = SPACE.exec(s)![0].length;
  const sign = s[i] === "+" || s[i] === "-" ? s[i] : "";
  const digitsAt = i + sign.length;
  const digits = /^\d*/.exec(s.slice(digitsAt))![0];
  let val = 0n;
  let valf = 0n;
  let hex = false;
  if (digits !== "") {
    if (sign === "-") {
      // parse_uint reports a negative number as out of range; trailing junk is still invalid.
      const rest = s.slice(digitsAt + digits.length);
      if (/^(\.\d*)?[bkmgtpe]?$/i.test(rest)) throw range();
      throw invalid();
    }
    val = BigInt(digits);
    i = digitsAt + digits.length;
    if (val >= TWO64) {
      if (i < s.length) throw invalid();
      throw range();
    }
    if (val === 0n && (s[i] === "x" || s[i] === "X")) {
      const h = /^[0-9a-fA-F]+/.exec(s.slice(i + 1));
      if (!h) throw invalid();
      val = BigInt(`0x${h[0]}`);
      i += 1 + h[0].length;
      if (s[i] === "." || suffixMul(s[i], u) !== undefined) throw invalid();
      if (i < s.length) throw invalid();
      if (val >= TWO64) throw range();
      hex = true;
    }
  } else if (!s.includes(".")) {
    throw invalid();
  }
  if (!hex && (s[i] === "." || digits === "")) {
    if (digits === "") {
      // No integral digits: strtod from the start (".5k", "+.5k").
      if (sign === "-" || s[digitsAt] !== ".") throw invalid();
      i = digitsAt;
    }
    const frac = /^\d*/.exec(s.slice(i + 1))![0];
    if (frac === "" && digits === "") throw invalid();
    const after = i + 1 + frac.length;
    // strtod would read an exponent; QEMU refuses those ("1.5e1k").
    if (frac !== "" && /^[eE][+-]?\d/.test(s.slice(after))) throw invalid();
    const fraction = frac === "" ? 0 : Number(`0.${frac}`);
    if (fraction >= 1) val += 1n;
    else valf = BigInt(Math.floor(fraction * 2 ** 64));
    i = after;
  }
  let mul = suffixMul(s[i], u);
  if (mul !== undefined) i++;
  else mul = suffixMul(defaultSuffix, u)!;
  if (i < s.length) throw invalid();
  let result: bigint;
  if (mul === 1n) {
    if (valf !== 0n) throw invalid();
    result = val;
  } else {
    const f = valf * mul;
    result = val * mul + (f >> 64n) + ((f >> 63n) & 1n);
  }
  if (result >= TWO64) throw range();
  return result;
}

/**
 * Parse a size as qemu-img does (see {@link parseSizeBig}) into a number of bytes. Values past
 * `Number.MAX_SAFE_INTEGER` are refused as out of range.
 */
export function parseSize(s: string, defaultSuffix: SizeSuffix = "B"): number {
  const v = parseSizeBig(s, defaultSuffix);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new SizeError("range", `Size '${s}' is out of range.`);
  return Number(v);
}

/** `strtoull` with base 0 (decimal, `0x` hex, leading-0 octal), as `qemu_strtou64`. */
export function parseUint64(s: string): bigint {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$/.exec(s);
  if (!m) throw new SizeError("invalid", `Invalid number specified: '${s}'.`);
  const body = m[2];
  const v =
    body.startsWith("0x") || body.startsWith("0X")
      ? BigInt(body)
      : body.length > 1 && body[0] === "0"
        ? BigInt(`0o${body.slice(1)}`)
        : BigInt(body);
  if (v >= TWO64) throw new SizeError("range", `Number '${s}' is out of range.`);
  if (m[1] === "-" && v !== 0n) throw new SizeError("range", `Number '${s}' is out of range.`);
  return v;
}

/**
 * qemu-img's `cvtnum_full`: parse `value` (a size, or with `isSize` false a plain number) named
 * `name` and check it lies in [`min`, `max`], with qemu-img's messages:
 * `Invalid NAME specified: 'VALUE'.` and `Invalid NAME specified. Must be between MIN and MAX.`
 * The result must also be a safe JS integer.
 */
export function cvtnum(name: string, value: string, min = 0n, max = INT64_MAX, isSize = true): number {
  let v: bigint;
  try {
    v = isSize ? parseSizeBig(value) : parseUint64(value);
  } catch (e) {
    if (e instanceof SizeError && e.kind === "invalid") {
      throw new SizeError("invalid", `Invalid ${name} specified: '${value}'.`);
    }
    v = -1n;
  }
  if (v < min || v > max) {
    throw new SizeError("range", `Invalid ${name} specified. Must be between ${min} and ${max}.`);
  }
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SizeError(
      "range",
      `Invalid ${name} specified. Must be between ${min} and ${Number.MAX_SAFE_INTEGER}.`,
    );
  }
  return Number(v);
}
