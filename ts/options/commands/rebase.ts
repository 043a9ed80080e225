/** `qemu-img rebase`: `-f -F -b -u -p -t -T -q -U -c --image-opts --object`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import {
  COMMON_LONG,
  cacheMode,
  fail,
  type ImageArg,
  imageArg,
  imageOptsExclusive,
  onePositional,
} from "./common.js";

/** qemu-img rebase's options (getopt `hf:F:b:upt:T:qUc`). */
export const REBASE_SPEC: OptionSpec = {
  short: {
    h: false,
    f: true,
    F: true,
    b: true,
    u: false,
    p: false,
    t: true,
    T: true,
    q: false,
    U: false,
    c: false,
  },
  long: {
    ...COMMON_LONG,
    "image-opts": [false, "image-opts"],
    "force-share": [false, "U"],
    compress: [false, "c"],
  },
};

/** A parsed `rebase`. */
export interface RebaseCommand {
  cmd: "rebase";
  /** The filename (or `--image-opts` text) as given. */
  filename: string;
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `-b`: the new backing file ("" removes it; absent only with `-u`, which then removes it too). */
  backingFile?: string;
  /** `-F`. */
  backingFormat?: string;
  /** `-u`. */
  unsafe: boolean;
  /** `-c`. */
  compress: boolean;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `-t` cache mode of the image. */
  cache?: string;
  /** `-T` cache mode of the backing files. */
  srcCache?: string;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a rebase command from parsed arguments, with qemu-img's checks in its order. */
export function buildRebase(p: ParsedArgs, objects: QomObject[]): RebaseCommand {
  const filename = onePositional(p);
  const cache = cacheMode(last(p, "t"), "Invalid cache option");
  const srcCache = cacheMode(last(p, "T"));
  const unsafe = has(p, "u");
  const b = last(p, "b");
  if (b === undefined && !unsafe) fail("Must specify backing file (-b) or use unsafe mode (-u)");
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: RebaseCommand = {
    cmd: "rebase",
    filename,
    image: imageArg(filename, imageOpts),
    unsafe,
    compress: has(p, "c"),
    progress: has(p, "p"),
    quiet: has(p, "q"),
    forceShare: has(p, "U"),
    imageOpts,
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  if (b !== undefined) c.backingFile = b;
  const F = last(p, "F");
  if (F !== undefined) c.backingFormat = F;
  if (cache !== undefined) c.cache = cache;
  if (srcCache !== undefined) c.srcCache = srcCache;
  return c;
}
