/** `qemu-img compare`: `-f -F -T -p -q -s -U --image-opts --object`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { COMMON_LONG, cacheMode, fail, type ImageArg, imageArg, imageOptsExclusive } from "./common.js";

/** qemu-img compare's options (getopt `f:hpqsF:T:U`). */
export const COMPARE_SPEC: OptionSpec = {
  short: { f: true, h: false, p: false, q: false, s: false, F: true, T: true, U: false },
  long: {
    ...COMMON_LONG,
    quiet: [false, "q"],
    progress: [false, "p"],
    "a-format": [true, "f"],
    "left-format": [true, "f"],
    "b-format": [true, "F"],
    "right-format": [true, "F"],
    "image-opts": [false, "image-opts"],
    strict: [false, "s"],
    cache: [true, "T"],
    "force-share": [false, "U"],
  },
};

/** A parsed `compare`. */
export interface CompareCommand {
  cmd: "compare";
  /** First filename as given. */
  filenameA: string;
  /** Second filename as given. */
  filenameB: string;
  /** First image (parsed spec with `--image-opts`). */
  imageA: ImageArg;
  /** Second image. */
  imageB: ImageArg;
  /** `-f`: first image's format. */
  formatA?: string;
  /** `-F`: second image's format. */
  formatB?: string;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** `-s`: strict (sizes and allocation must match). */
  strict: boolean;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `-T` cache mode. */
  cache?: string;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a compare command from parsed arguments. */
export function buildCompare(p: ParsedArgs, objects: QomObject[]): CompareCommand {
  if (p.positionals.length !== 2) fail("Expecting two image file names");
  const cache = cacheMode(last(p, "T"));
  imageOptsExclusive(p, ["f", "F"]);
  const imageOpts = has(p, "image-opts");
  const [a, b] = p.positionals;
  const c: CompareCommand = {
    cmd: "compare",
    filenameA: a,
    filenameB: b,
    imageA: imageArg(a, imageOpts),
    imageB: imageArg(b, imageOpts),
    imageOpts,
    strict: has(p, "s"),
    progress: has(p, "p"),
    quiet: has(p, "q"),
    forceShare: has(p, "U"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.formatA = f;
  const F = last(p, "F");
  if (F !== undefined) c.formatB = F;
  if (cache !== undefined) c.cache = cache;
  return c;
}
