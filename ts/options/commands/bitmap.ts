/**
 * `qemu-img bitmap`: `(--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
 * [-b source_file [-F source_fmt]] [-g granularity] [--object] [--image-opts | -f fmt] filename
 * bitmap`. Actions keep their command-line order.
 */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { cvtnum, SizeError } from "../size.js";
import { COMMON_LONG, fail, type ImageArg, imageArg, imageOptsExclusive } from "./common.js";

/** qemu-img bitmap's options (getopt `b:hf:F:g:`). */
export const BITMAP_SPEC: OptionSpec = {
  short: { b: true, h: false, f: true, F: true, g: true },
  long: {
    ...COMMON_LONG,
    "image-opts": [false, "image-opts"],
    add: [false, "add"],
    remove: [false, "remove"],
    clear: [false, "clear"],
    enable: [false, "enable"],
    disable: [false, "disable"],
    merge: [true, "merge"],
    granularity: [true, "g"],
    "source-file": [true, "b"],
    "source-format": [true, "F"],
  },
};

/** One action, in command-line order. */
export type BitmapCommandAction =
  | { op: "add" | "remove" | "clear" | "enable" | "disable" }
  | { op: "merge"; source: string };

/** A parsed `bitmap`. */
export interface BitmapCommand {
  cmd: "bitmap";
  /** The filename (or `--image-opts` text) as given. */
  filename: string;
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** The bitmap every action applies to. */
  bitmap: string;
  /** The actions, in order. */
  actions: BitmapCommandAction[];
  /** `-g` (for `--add`); absent or 0 for the default. */
  granularity?: number;
  /** `-b`: the image `--merge` reads its source bitmap from (default: this image). */
  sourceFile?: string;
  /** `-F`. */
  sourceFormat?: string;
  /** `--object` definitions. */
  objects: QomObject[];
}

const OPS = new Set(["add", "remove", "clear", "enable", "disable"]);

/** Build a bitmap command from parsed arguments, with qemu-img's checks and messages. */
export function buildBitmap(p: ParsedArgs, objects: QomObject[]): BitmapCommand {
  const actions: BitmapCommandAction[] = [];
  for (const [k, v] of p.opts) {
    if (k === "merge") actions.push({ op: "merge", source: String(v) });
    else if (OPS.has(k)) actions.push({ op: k as "add" });
  }
  const g = last(p, "g");
  let granularity: number | undefined;
  if (g !== undefined) {
    try {
      granularity = cvtnum("granularity", g);
    } catch (e) {
      if (e instanceof SizeError) fail(e.message);
      throw e;
    }
  }
  imageOptsExclusive(p);
  if (actions.length === 0)
    fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
  if (granularity !== undefined && !actions.some((a) => a.op === "add"))
    fail("granularity only supported with --add");
  const b = last(p, "b");
  const F = last(p, "F");
  if (F !== undefined && b === undefined) fail("-F only supported with -b");
  if (b !== undefined && !actions.some((a) => a.op === "merge"))
    fail("Merge bitmap source file only supported with --merge");
  if (p.positionals.length !== 2) fail("Expecting filename and bitmap name");
  const [filename, bitmap] = p.positionals;
  const imageOpts = has(p, "image-opts");
  const c: BitmapCommand = {
    cmd: "bitmap",
    filename,
    image: imageArg(filename, imageOpts),
    imageOpts,
    bitmap,
    actions,
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  if (granularity !== undefined) c.granularity = granularity;
  if (b !== undefined) c.sourceFile = b;
  if (F !== undefined) c.sourceFormat = F;
  return c;
}
