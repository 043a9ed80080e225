/** `qemu-img info`: `-f --output --backing-chain(-b) -U --image-opts --object`. */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import {
  COMMON_LONG,
  type ImageArg,
  imageArg,
  imageOptsExclusive,
  type OutputFormat,
  onePositional,
  outputFormat,
} from "./common.js";

/** qemu-img info's options (getopt `bf:hU`). */
export const INFO_SPEC: OptionSpec = {
  short: { b: false, f: true, h: false, U: false },
  long: {
    ...COMMON_LONG,
    format: [true, "f"],
    "backing-chain": [false, "backing-chain"],
    "image-opts": [false, "image-opts"],
    "force-share": [false, "U"],
    output: [true, "output"],
  },
};

/** A parsed `info`. */
export interface InfoCommand {
  cmd: "info";
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
  /** `--backing-chain` / `-b`. */
  backingChain: boolean;
  /** `-U` / `--force-share`. */
  forceShare: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build an info command from parsed arguments. */
export function buildInfo(p: ParsedArgs, objects: QomObject[]): InfoCommand {
  const output = outputFormat(p);
  const filename = onePositional(p);
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: InfoCommand = {
    cmd: "info",
    filename,
    image: imageArg(filename, imageOpts),
    imageOpts,
    output,
    backingChain: has(p, "backing-chain") || has(p, "b"),
    forceShare: has(p, "U"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  return c;
}
