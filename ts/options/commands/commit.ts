/** `qemu-img commit`: `-f -t -b -d -p -q -r --image-opts --object`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { cvtnum } from "../size.js";
import {
  COMMON_LONG,
  cacheMode,
  type ImageArg,
  imageArg,
  imageOptsExclusive,
  onePositional,
} from "./common.js";

/** qemu-img commit's options (getopt `f:ht:b:dpqr:`). */
export const COMMIT_SPEC: OptionSpec = {
  short: { f: true, h: false, t: true, b: true, d: false, p: false, q: false, r: true },
  long: { ...COMMON_LONG, "image-opts": [false, "image-opts"] },
};

/** A parsed `commit`. */
export interface CommitCommand {
  cmd: "commit";
  /** The filename (or `--image-opts` text) as given. */
  filename: string;
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `-b`: the base image in the chain (implies `-d`). */
  base?: string;
  /** `-d`: do not empty the image after committing. */
  drop: boolean;
  /** `-r`: bytes per second. */
  rateLimit?: number;
  /** `-t` cache mode. */
  cache?: string;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a commit command from parsed arguments, with qemu-img's checks in its order. */
export function buildCommit(p: ParsedArgs, objects: QomObject[]): CommitCommand {
  const r = last(p, "r");
  const rateLimit = r === undefined ? undefined : cvtnum("rate limit", r);
  const filename = onePositional(p);
  const cache = cacheMode(last(p, "t"), "Invalid cache option");
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: CommitCommand = {
    cmd: "commit",
    filename,
    image: imageArg(filename, imageOpts),
    drop: has(p, "d"),
    progress: has(p, "p"),
    quiet: has(p, "q"),
    imageOpts,
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  const b = last(p, "b");
  if (b !== undefined) c.base = b;
  if (rateLimit !== undefined) c.rateLimit = rateLimit;
  if (cache !== undefined) c.cache = cache;
  return c;
}
