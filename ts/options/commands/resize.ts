/** `qemu-img resize`: `[-f fmt] [--image-opts] [--preallocation=mode] [-q] [--shrink] filename [+|-]size`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { parseSizeBig } from "../size.js";
import { COMMON_LONG, fail, type ImageArg, imageArg, imageOptsExclusive } from "./common.js";

/** qemu-img resize's options (getopt `f:hq`). */
export const RESIZE_SPEC: OptionSpec = {
  short: { f: true, h: false, q: false },
  long: {
    ...COMMON_LONG,
    "image-opts": [false, "image-opts"],
    preallocation: [true, "preallocation"],
    shrink: [false, "shrink"],
  },
};

/** Preallocation modes qemu-img resize names (the driver decides which it supports). */
export type ResizePreallocation = "off" | "metadata" | "falloc" | "full";

/** A parsed `resize`. */
export interface ResizeCommand {
  cmd: "resize";
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** The size: absolute, or relative to the current size when `relative` is set. */
  size: bigint;
  /** `+` (grow by) or `-` (shrink by), or absent for an absolute size. */
  relative?: "+" | "-";
  /** `--preallocation`, `off` by default. */
  preallocation: ResizePreallocation;
  /** `--shrink`. */
  shrink: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/**
 * qemu-img resize takes `-1G` as a size, not an option: move arguments that look like negative
 * sizes behind a `--` (unless one is there already), so getopt leaves them alone.
 */
export function protectNegativeSize(argv: readonly string[]): string[] {
  if (argv.includes("--")) return [...argv];
  const neg = argv.filter((a) => /^-[0-9.]/.test(a));
  if (neg.length === 0) return [...argv];
  return [...argv.filter((a) => !/^-[0-9.]/.test(a)), "--", ...neg];
}

/** Build a resize command from parsed arguments, with qemu-img's messages. */
export function buildResize(p: ParsedArgs, objects: QomObject[]): ResizeCommand {
  if (p.positionals.length < 2) fail("Expecting image file name and size");
  if (p.positionals.length > 2) fail("Extra argument(s) in command line");
  const [filename, sizeArg] = p.positionals;
  const prealloc = last(p, "preallocation") ?? "off";
  if (!["off", "metadata", "falloc", "full"].includes(prealloc))
    fail(`Invalid preallocation mode '${prealloc}'`);
  const sign = sizeArg[0] === "+" || sizeArg[0] === "-" ? (sizeArg[0] as "+" | "-") : undefined;
  let size: bigint;
  try {
    size = parseSizeBig(sign ? sizeArg.slice(1) : sizeArg);
  } catch {
    fail(
      "Parameter 'size' expects a non-negative number below 2^64\n" +
        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
        "and exabytes, respectively.",
    );
  }
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: ResizeCommand = {
    cmd: "resize",
    image: imageArg(filename, imageOpts),
    size,
    preallocation: prealloc as ResizePreallocation,
    shrink: has(p, "shrink"),
    quiet: has(p, "q"),
    objects,
  };
  if (sign) c.relative = sign;
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  return c;
}
