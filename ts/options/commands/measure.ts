/** `qemu-img measure`: `--output -O -o --size | [-f --image-opts -l -U] filename`. */
import { all, has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import { accumulateOptions, type KeyValue, parseKeyValues } from "../keyvalue.js";
import type { QomObject } from "../object.js";
import { INT64_MAX, parseSizeBig, SizeError } from "../size.js";
import { COMMON_LONG, fail, type ImageArg, imageArg, type OutputFormat, outputFormat } from "./common.js";

/** qemu-img measure's options (getopt `hf:O:o:l:U`). */
export const MEASURE_SPEC: OptionSpec = {
  short: { h: false, f: true, O: true, o: true, l: true, U: false },
  long: {
    ...COMMON_LONG,
    "image-opts": [false, "image-opts"],
    output: [true, "output"],
    size: [true, "size"],
    "force-share": [false, "U"],
  },
};

/** A parsed `measure`. */
export interface MeasureCommand {
  cmd: "measure";
  /** The source image, unless `--size` was given. */
  image?: ImageArg;
  /** `--size`, in bytes. */
  size?: bigint;
  /** `-f`. */
  format?: string;
  /** `-O`, `raw` by default. */
  targetFormat: string;
  /** `-o` options in order (repeated `-o` joined with `,`). */
  options: KeyValue[];
  /** `-l` snapshot parameter. */
  snapshot?: string;
  /** `--output`. */
  output: OutputFormat;
  /** `-U`. */
  forceShare: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** `--size`: qemu-img's cvtnum over the whole int64 range (measure never allocates the size). */
function imageSize(v: string): bigint {
  let n = -1n;
  try {
    n = parseSizeBig(v);
  } catch (e) {
    if (e instanceof SizeError && e.kind === "invalid") fail(`Invalid image size specified: '${v}'.`);
  }
  if (n < 0n || n > INT64_MAX) fail(`Invalid image size specified. Must be between 0 and ${INT64_MAX}.`);
  return n;
}

/** Build a measure command from parsed arguments, with qemu-img's messages in its order. */
export function buildMeasure(p: ParsedArgs, objects: QomObject[]): MeasureCommand {
  const output = outputFormat(p);
  const sizeArg = last(p, "size");
  const size = sizeArg === undefined ? undefined : imageSize(sizeArg);
  if (p.positionals.length > 1) fail("At most one filename argument is allowed.");
  const filename = p.positionals[0];
  const imageOpts = has(p, "image-opts");
  const f = last(p, "f");
  const l = last(p, "l");
  if (filename === undefined && (imageOpts || f !== undefined || l !== undefined))
    fail("--image-opts, -f, and -l require a filename argument.");
  if (filename !== undefined && imageOpts && f !== undefined)
    fail("--image-opts and --format are mutually exclusive");
  if (filename !== undefined && size !== undefined) fail("--size N cannot be used together with a filename.");
  if (filename === undefined && size === undefined)
    fail("Either --size N or one filename must be specified.");
  const optionsString = accumulateOptions(all(p, "o"));
  const options = optionsString === undefined ? [] : parseKeyValues(optionsString);
  const help = options.find((kv) => kv.key === "help");
  if (help) fail("Invalid parameter 'help'");
  const c: MeasureCommand = {
    cmd: "measure",
    targetFormat: last(p, "O") ?? "raw",
    options,
    output,
    forceShare: has(p, "U"),
    objects,
  };
  if (filename !== undefined) c.image = imageArg(filename, imageOpts);
  if (size !== undefined) c.size = size;
  if (f !== undefined) c.format = f;
  if (l !== undefined) c.snapshot = l;
  return c;
}
