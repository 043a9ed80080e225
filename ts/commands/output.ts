/** Output helpers shared by the commands: qemu-img's size strings, streams, JSON layout. */

/** Where a command writes. */
export interface Io {
  /** Standard output. */
  out: (s: string) => void;
  /** Standard error. */
  err: (s: string) => void;
}

const SUFFIXES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** qemu's `size_to_str`: three significant digits with a binary suffix ("196 KiB", "0.977 MiB"). */
export function sizeToStr(val: number): string {
  let i = 0;
  if (val > 0) {
    // frexp(val / (1000/1024)) exponent, then groups of 10 bits.
    const e = Math.floor(Math.log2(val / (1000 / 1024))) + 1;
    i = Math.max(0, Math.min(SUFFIXES.length - 1, Math.floor((e - 1) / 10)));
  }
  return `${formatG3(val / 2 ** (i * 10))} ${SUFFIXES[i]}`;
}

/** C's `%0.3g` for 0 ≤ v < 1000: three significant digits, ties to even, no trailing zeros. */
export function formatG3(v: number): string {
  if (v === 0) return "0";
  const decimals = Math.max(0, 2 - Math.floor(Math.log10(v)));
  const scaled = v * 10 ** decimals;
  let r = Math.round(scaled);
  if (Math.abs(scaled - Math.trunc(scaled)) === 0.5)
    r = Math.trunc(scaled) % 2 === 0 ? Math.trunc(scaled) : Math.trunc(scaled) + 1;
  return String(Number((r / 10 ** decimals).toFixed(decimals)));
}

/**
 * qemu-img's JSON pretty printer: 4-space indent, and an empty container closed on the next line
 * at the indentation of the line that opens it.
 */
export function qemuJson(v: unknown): string {
  return JSON.stringify(v, null, 4).replace(
    /^( *)(.*?)(\[\]|\{\})/gm,
    (_m, indent: string, head: string, pair: string) => `${indent}${head}${pair[0]}\n${indent}${pair[1]}`,
  );
}

/**
 * C printf's `%.2f`. Both it and `Number#toFixed` round the exact binary value, but they break
 * exact ties differently: C rounds half to even, `toFixed` rounds up. A double is an exact tie at
 * the third decimal only when it is an odd multiple of 1/8 (x.125, x.375, x.625, x.875).
 */
export function printfFixed2(x: number): string {
  const eighths = x * 8;
  if (Number.isInteger(eighths) && Math.abs(eighths) % 2 === 1) {
    const y = x * 100; // exactly k + 0.5
    const k = Math.floor(y);
    return ((k % 2 === 0 ? k : k + 1) / 100).toFixed(2);
  }
  return x.toFixed(2);
}
