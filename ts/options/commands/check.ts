/** `qemu-img check`: `-f -r leaks|all -T -q -U --output --image-opts --object`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import {
  COMMON_LONG,
  cacheMode,
  fail,
  type ImageArg,
  imageArg,
  imageOptsExclusive,
  type OutputFormat,
  onePositional,
  outputFormat,
} from "./common.js";

/** qemu-img check's options (getopt `f:hqr:T:U`). */
export const CHECK_SPEC: OptionSpec = {
  short: { f: true, h: false, q: false, r: true, T: true, U: false },
  long: {
    ...COMMON_LONG,
    quiet: [false, "q"],
    format: [true, "f"],
    "image-opts": [false, "image-opts"],
    "force-share": [false, "U"],
    output: [true, "output"],
    cache: [true, "T"],
    repair: [true, "r"],
  },
};

/** A parsed `check`. */
export interface CheckCommand {
  cmd: "check";
  /** The filename (or `--image-opts` text) as given. */
  filename: string;
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** `--output`. */
  output: OutputFormat;
  /** `-r leaks|all`. */
  repair?: "leaks" | "all";
  /** `-T` cache mode. */
  cache?: string;
  /** `-q`. */
  quiet: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a check command from parsed arguments. */
export function buildCheck(p: ParsedArgs, objects: QomObject[]): CheckCommand {
  const r = last(p, "r");
  if (r !== undefined && r !== "leaks" && r !== "all")
    fail(`--repair (-r) expects 'leaks' or 'all' not '${r}'`);
  const output = outputFormat(p);
  const filename = onePositional(p);
  const cache = cacheMode(last(p, "T"));
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: CheckCommand = {
    cmd: "check",
    filename,
    image: imageArg(filename, imageOpts),
    imageOpts,
    output,
    quiet: has(p, "q"),
    forceShare: has(p, "U"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  if (r !== undefined) c.repair = r;
  if (cache !== undefined) c.cache = cache;
  return c;
}
