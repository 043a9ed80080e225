/** `qemu-img map`: `-f --output --start-offset(-s) --max-length(-l) -U --image-opts --object`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { cvtnum } from "../size.js";
import {
  COMMON_LONG,
  type ImageArg,
  imageArg,
  imageOptsExclusive,
  type OutputFormat,
  onePositional,
  outputFormat,
} from "./common.js";

/** qemu-img map's options (getopt `f:hl:s:U`). */
export const MAP_SPEC: OptionSpec = {
  short: { f: true, h: false, l: true, s: true, U: false },
  long: {
    ...COMMON_LONG,
    format: [true, "f"],
    "image-opts": [false, "image-opts"],
    "force-share": [false, "U"],
    output: [true, "output"],
    "start-offset": [true, "s"],
    "max-length": [true, "l"],
  },
};

/** A parsed `map`. */
export interface MapCommand {
  cmd: "map";
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
  /** `--start-offset` in bytes (0 by default). */
  startOffset: number;
  /** `--max-length` in bytes, if given. */
  maxLength?: number;
  /** `-U`. */
  forceShare: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a map command from parsed arguments. */
export function buildMap(p: ParsedArgs, objects: QomObject[]): MapCommand {
  const s = last(p, "s");
  const startOffset = s === undefined ? 0 : cvtnum("start offset", s);
  const l = last(p, "l");
  const maxLength = l === undefined ? undefined : cvtnum("max length", l);
  const output = outputFormat(p);
  const filename = onePositional(p);
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: MapCommand = {
    cmd: "map",
    filename,
    image: imageArg(filename, imageOpts),
    imageOpts,
    output,
    startOffset,
    forceShare: has(p, "U"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  if (maxLength !== undefined) c.maxLength = maxLength;
  return c;
}
