/** `qemu-img create`: `-f -F -b -o -q -u --object`, a filename and an optional size. */
import { all, has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import { accumulateOptions, hasHelpOption, type KeyValue, parseKeyValues } from "../keyvalue.js";
import type { QomObject } from "../object.js";
import { cvtnum } from "../size.js";
import { COMMON_LONG, fail } from "./common.js";

/** qemu-img create's options (getopt `F:b:f:ho:qu`). */
export const CREATE_SPEC: OptionSpec = {
  short: { F: true, b: true, f: true, h: false, o: true, q: false, u: false },
  long: {
    ...COMMON_LONG,
    quiet: [false, "q"],
    format: [true, "f"],
    options: [true, "o"],
    backing: [true, "b"],
    "backing-format": [true, "F"],
    "backing-unsafe": [false, "u"],
  },
};

/** A parsed `create`. */
export interface CreateCommand {
  cmd: "create";
  /** Image to create. */
  filename: string;
  /** Format (`-f`), `raw` by default. */
  format: string;
  /** Virtual size in bytes, if given (otherwise taken from the backing file). */
  size?: number;
  /** `-o` options in order (repeated `-o` joined with `,`). */
  options: KeyValue[];
  /** The joined `-o` text, if any. */
  optionsString?: string;
  /** Backing file (`-b`). */
  backingFile?: string;
  /** Backing file format (`-F`). */
  backingFormat?: string;
  /** `-u`: do not open the backing file. */
  unsafe: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** `-o help` for create or convert: list the format's creation options. */
export interface OptionsHelpCommand {
  cmd: "options-help";
  /** The command asking. */
  command: "create" | "convert";
  /** Format whose options to list. */
  format: string;
  /** Filename given, if any (its protocol's options are listed too). */
  filename?: string;
}

/** Build a create command from parsed arguments. */
export function buildCreate(p: ParsedArgs, objects: QomObject[]): CreateCommand | OptionsHelpCommand {
  const optionsString = accumulateOptions(all(p, "o"));
  const format = last(p, "f") ?? "raw";
  const filename = p.positionals[0];
  if (optionsString !== undefined && hasHelpOption(optionsString)) {
    return filename === undefined
      ? { cmd: "options-help", command: "create", format }
      : { cmd: "options-help", command: "create", format, filename };
  }
  if (filename === undefined) fail("Expecting image file name");
  const sizeArg = p.positionals[1];
  const size = sizeArg === undefined ? undefined : cvtnum("image size", sizeArg);
  if (p.positionals.length > 2) fail(`Unexpected argument: ${p.positionals[2]}`);
  const c: CreateCommand = {
    cmd: "create",
    filename,
    format,
    options: optionsString === undefined ? [] : parseKeyValues(optionsString),
    unsafe: has(p, "u"),
    quiet: has(p, "q"),
    objects,
  };
  if (size !== undefined) c.size = size;
  if (optionsString !== undefined) c.optionsString = optionsString;
  const b = last(p, "b");
  if (b !== undefined) c.backingFile = b;
  const F = last(p, "F");
  if (F !== undefined) c.backingFormat = F;
  return c;
}
