/**
 * `qimg list-exports [--object objectdef] [--output=human|json] ADDRESS`: the exports of an NBD
 * server (`NBD_OPT_LIST`), like `nbdinfo --list`. qemu-img has no such command.
 */
import type { OptionSpec, ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { COMMON_LONG, type OutputFormat, onePositional, outputFormat } from "./common.js";

/** list-exports' options. */
export const LIST_EXPORTS_SPEC: OptionSpec = {
  short: { h: false },
  long: { ...COMMON_LONG, output: [true, "output"] },
};

/** A parsed `list-exports`. */
export interface ListExportsCommand {
  cmd: "list-exports";
  /** The NBD address (URI or legacy form; its export name is ignored). */
  address: string;
  /** `--output`. */
  output: OutputFormat;
  /** `--object` definitions (TLS credentials). */
  objects: QomObject[];
}

/** Build a list-exports command from parsed arguments. */
export function buildListExports(p: ParsedArgs, objects: QomObject[]): ListExportsCommand {
  const output = outputFormat(p);
  return { cmd: "list-exports", address: onePositional(p), output, objects };
}
