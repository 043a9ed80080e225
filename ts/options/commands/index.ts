/**
 * The qemu-img command line as typed command objects: `parseCommandLine(argv)` dispatches on the
 * first word to create, info, convert, check, compare, map, commit, rebase or bitmap, or returns
 * a help/version request.
 */
import { type OptionSpec, parseArgs } from "../argv.js";
import { isObjectHelp } from "../object.js";
import { AMEND_SPEC, type AmendCommand, buildAmend } from "./amend.js";
import { BENCH_SPEC, type BenchCommand, buildBench } from "./bench.js";
import { BITMAP_SPEC, type BitmapCommand, buildBitmap } from "./bitmap.js";
import { buildCheck, CHECK_SPEC, type CheckCommand } from "./check.js";
import { buildCommit, COMMIT_SPEC, type CommitCommand } from "./commit.js";
import { fail, objects } from "./common.js";
import { buildCompare, COMPARE_SPEC, type CompareCommand } from "./compare.js";
import { buildConvert, CONVERT_SPEC, type ConvertCommand } from "./convert.js";
import { buildCreate, CREATE_SPEC, type CreateCommand, type OptionsHelpCommand } from "./create.js";
import { buildInfo, INFO_SPEC, type InfoCommand } from "./info.js";
import { buildListExports, LIST_EXPORTS_SPEC, type ListExportsCommand } from "./list-exports.js";
import { buildMap, MAP_SPEC, type MapCommand } from "./map.js";
import { buildRebase, REBASE_SPEC, type RebaseCommand } from "./rebase.js";
import { buildServe, SERVE_SPEC, type ServeCommand } from "./serve.js";
import { buildSnapshot, SNAPSHOT_SPEC, type SnapshotCommand } from "./snapshot.js";

export type { BitmapCommand, BitmapCommandAction } from "./bitmap.js";

import { buildMeasure, MEASURE_SPEC, type MeasureCommand } from "./measure.js";
import { buildResize, protectNegativeSize, RESIZE_SPEC, type ResizeCommand } from "./resize.js";

export type { AmendCommand } from "./amend.js";
export type { BenchCommand } from "./bench.js";
export type { CheckCommand } from "./check.js";
export type { CommitCommand } from "./commit.js";
export type { ImageArg, OutputFormat } from "./common.js";
export type { CompareCommand } from "./compare.js";
export type { ConvertCommand, SnapshotRef } from "./convert.js";
export type { CreateCommand, OptionsHelpCommand } from "./create.js";
export type { InfoCommand } from "./info.js";
export type { ListExportsCommand } from "./list-exports.js";
export type { MapCommand } from "./map.js";
export type { MeasureCommand } from "./measure.js";
export type { RebaseCommand } from "./rebase.js";
export type { ResizeCommand, ResizePreallocation } from "./resize.js";
export type { ServeCommand } from "./serve.js";
export type { SnapshotCommand } from "./snapshot.js";

/** The commands qimg implements. */
export type CommandName =
  | "create"
  | "info"
  | "convert"
  | "check"
  | "compare"
  | "map"
  | "commit"
  | "rebase"
  | "bitmap"
  | "snapshot"
  | "measure"
  | "resize"
  | "amend"
  | "list-exports"
  | "serve"
  | "bench";

/** `-h` / `--help`, globally (no topic) or for a command. */
export interface HelpCommand {
  cmd: "help";
  /** The command whose usage is wanted; absent for the global help. */
  topic?: CommandName;
}

/** `-V` / `--version`. */
export interface VersionCommand {
  cmd: "version";
}

/** `--object help` or `--object TYPE,help`. */
export interface ObjectHelpCommand {
  cmd: "object-help";
  /** The QOM type asked about, if any. */
  qomType?: string;
}

/** Everything {@link parseCommandLine} can return. */
export type Command =
  | CreateCommand
  | InfoCommand
  | ConvertCommand
  | CheckCommand
  | CompareCommand
  | MapCommand
  | CommitCommand
  | RebaseCommand
  | BitmapCommand
  | SnapshotCommand
  | MeasureCommand
  | ResizeCommand
  | AmendCommand
  | ListExportsCommand
  | ServeCommand
  | BenchCommand
  | HelpCommand
  | VersionCommand
  | OptionsHelpCommand
  | ObjectHelpCommand;

/** Each command's option table, with qemu-img's letters and long names. */
export const COMMAND_SPECS: Readonly<Record<string, OptionSpec>> = {
  create: CREATE_SPEC,
  info: INFO_SPEC,
  convert: CONVERT_SPEC,
  check: CHECK_SPEC,
  compare: COMPARE_SPEC,
  map: MAP_SPEC,
  commit: COMMIT_SPEC,
  rebase: REBASE_SPEC,
  bitmap: BITMAP_SPEC,
  snapshot: SNAPSHOT_SPEC,
  measure: MEASURE_SPEC,
  resize: RESIZE_SPEC,
  amend: AMEND_SPEC,
  "list-exports": LIST_EXPORTS_SPEC,
  serve: SERVE_SPEC,
  bench: BENCH_SPEC,
};

const BUILDERS = {
  create: buildCreate,
  info: buildInfo,
  convert: buildConvert,
  check: buildCheck,
  compare: buildCompare,
  map: buildMap,
  commit: buildCommit,
  rebase: buildRebase,
  bitmap: buildBitmap,
  snapshot: buildSnapshot,
  measure: buildMeasure,
  resize: buildResize,
  amend: buildAmend,
  "list-exports": buildListExports,
  serve: buildServe,
  bench: buildBench,
} as const;

/** True if `s` names a command qimg implements. */
export function isCommandName(s: string): s is CommandName {
  return Object.hasOwn(COMMAND_SPECS, s);
}

/** Parse one command's arguments (`argv` without the command word). */
export function parseCommand(cmd: CommandName, argv: readonly string[]): Command {
  const args = cmd === "resize" ? protectNegativeSize(argv) : argv;
  const p = parseArgs(args, COMMAND_SPECS[cmd], { stopAt: ["h"] });
  if (p.stoppedAt === "h") return { cmd: "help", topic: cmd };
  const objs = objects(p);
  if (isObjectHelp(objs))
    return objs.qomType === undefined
      ? { cmd: "object-help" }
      : { cmd: "object-help", qomType: objs.qomType };
  return BUILDERS[cmd](p, objs);
}

/**
 * Parse a whole qimg command line (`process.argv.slice(2)`): global `-h`/`--help` and
 * `-V`/`--version`, then the command word and its options. Throws `QimgError`
 * (`ERR_QIMG_INVALID_ARGUMENT`) with qemu-img's wording.
 */
export function parseCommandLine(argv: readonly string[]): Command {
  const [first, ...rest] = argv;
  if (first === undefined) fail("Not enough arguments");
  if (first === "-h" || first === "--help" || first === "help") return { cmd: "help" };
  if (first === "-V" || first === "--version") return { cmd: "version" };
  if (first.startsWith("-")) fail(`unrecognized option '${first}'`);
  if (!isCommandName(first)) fail(`Command not found: ${first}`);
  return parseCommand(first, rest);
}
