/** `qemu-img amend`: `[-p] [-q] [-f fmt] [--image-opts] [--force] [-t cache] -o options filename`. */
import { all, has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import { accumulateOptions, hasHelpOption, type KeyValue, parseKeyValues } from "../keyvalue.js";
import type { QomObject } from "../object.js";
import { COMMON_LONG, cacheMode, fail, type ImageArg, imageArg, imageOptsExclusive } from "./common.js";

/** qemu-img amend's options (getopt `ho:f:t:pq`). */
export const AMEND_SPEC: OptionSpec = {
  short: { h: false, o: true, f: true, t: true, p: false, q: false },
  long: {
    ...COMMON_LONG,
    "image-opts": [false, "image-opts"],
    force: [false, "force"],
  },
};

/** A parsed `amend`. */
export interface AmendCommand {
  cmd: "amend";
  /** The image: the filename, or the parsed spec with `--image-opts`; absent for `-o help` alone. */
  image?: ImageArg;
  /** `-f`. */
  format?: string;
  /** `-o` options in order. */
  options: KeyValue[];
  /** `-o help`: list the format's amendable options instead. */
  help: boolean;
  /** `-t` cache mode. */
  cache?: string;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `--force` (needed by QEMU only for some LUKS keyslot changes). */
  force: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build an amend command from parsed arguments, with qemu-img's messages. */
export function buildAmend(p: ParsedArgs, objects: QomObject[]): AmendCommand {
  const optionsString = accumulateOptions(all(p, "o"));
  if (optionsString === undefined) fail("Must specify options (-o)");
  const help = hasHelpOption(optionsString);
  if (!help && p.positionals.length !== 1) fail("Expecting one image file name");
  if (p.positionals.length > 1) fail("Expecting one image file name");
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const c: AmendCommand = {
    cmd: "amend",
    options: parseKeyValues(optionsString).filter((kv) => kv.key !== "help"),
    help,
    progress: has(p, "p"),
    quiet: has(p, "q"),
    force: has(p, "force"),
    objects,
  };
  const filename = p.positionals[0];
  if (filename !== undefined) c.image = imageArg(filename, imageOpts);
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  const t = cacheMode(last(p, "t"), "Invalid cache option");
  if (t !== undefined) c.cache = t;
  return c;
}
