/** Pieces shared by the per-command parsers: output format, cache modes, images, objects. */
import { QimgError } from "../../errors.js";
import { all, has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import { type OptionsDict, parseImageOpts } from "../keyvalue.js";
import { parseObjects, type QomObject, type QomObjectHelp } from "../object.js";

/** Output format of info, check and map. */
export type OutputFormat = "human" | "json";

/** An image argument: a filename, or with `--image-opts` its parsed specification. */
export type ImageArg = string | OptionsDict;

/** Long options every command here accepts. */
export const COMMON_LONG: OptionSpec["long"] = {
  help: [false, "h"],
  object: [true, "object"],
};

/** Throw qemu-img's usage error (code `ERR_QIMG_INVALID_ARGUMENT`). */
export function fail(msg: string): never {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** `--output human|json` with qemu-img's message; `human` when absent. */
export function outputFormat(p: ParsedArgs): OutputFormat {
  const o = last(p, "output");
  if (o === undefined) return "human";
  if (o !== "human" && o !== "json") fail(`--output expects 'human' or 'json' not '${o}'`);
  return o;
}

/** Cache modes QEMU's bdrv_parse_cache_mode accepts. */
export const CACHE_MODES: ReadonlySet<string> = new Set([
  "none",
  "off",
  "writeback",
  "writethrough",
  "directsync",
  "unsafe",
]);

/** Check a cache mode; `what` is the start of qemu-img's message (`Invalid source cache option`). */
export function cacheMode(v: string | undefined, what = "Invalid source cache option"): string | undefined {
  if (v !== undefined && !CACHE_MODES.has(v)) fail(`${what}: ${v}`);
  return v;
}

/** `--object` arguments, or the help request among them. */
export function objects(p: ParsedArgs): QomObject[] | QomObjectHelp {
  return parseObjects(all(p, "object"));
}

/** Reject `--image-opts` with a format, as qemu-img. */
export function imageOptsExclusive(p: ParsedArgs, formatKeys: readonly string[] = ["f"]): void {
  if (has(p, "image-opts") && formatKeys.some((k) => has(p, k))) {
    fail("--image-opts and --format are mutually exclusive");
  }
}

/** The image argument for `name`: parsed when `imageOpts`. */
export function imageArg(name: string, imageOpts: boolean): ImageArg {
  return imageOpts ? parseImageOpts(name) : name;
}

/** Exactly one positional, or qemu-img's `Expecting one image file name`. */
export function onePositional(p: ParsedArgs): string {
  if (p.positionals.length !== 1) fail("Expecting one image file name");
  return p.positionals[0];
}
