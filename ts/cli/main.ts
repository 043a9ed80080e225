#!/usr/bin/env node
/**
 * The `qimg` command line: qemu-img's syntax for create, info, convert, check, compare and map.
 * Errors print as `qimg: message` on stderr with qemu-img's exit codes.
 */
import { checkCommand } from "../commands/check.js";
import { compareCommand } from "../commands/compare.js";
import { convertCommand } from "../commands/convert.js";
import { createCommand, optionsHelp } from "../commands/create.js";
import { infoCommand } from "../commands/info.js";
import { mapCommand } from "../commands/map.js";
import type { Io } from "../commands/output.js";
import { QimgError } from "../errors.js";
import type { ImageOptions } from "../graph/spec.js";
import { all, has, last, type ParsedArgs, parseArgs } from "../options/argv.js";
import { COMMAND_SPECS } from "../options/commands.js";
import { parseImageOpts, parseKeyValues, toRecord, wantsHelp } from "../options/keyvalue.js";
import { parseSize } from "../options/size.js";

const io: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

const USAGE = `qimg: QEMU's block layer for Node.js — a qemu-img compatible command line
usage: qimg [standard options] command [command options]

Commands:
  create [-q] [--object objectdef] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [-U] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-o options] [-S sparse_size] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename
  check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] filename
  compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] filename1 filename2
  map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
`;

function fail(msg: string): never {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

function output(p: ParsedArgs): "human" | "json" {
  const o = last(p, "output") ?? "human";
  if (o !== "human" && o !== "json") fail(`--output must be used with human or json as argument.`);
  return o;
}

function image(p: ParsedArgs, name: string): string | ImageOptions {
  return has(p, "image-opts") ? (parseImageOpts(name) as ImageOptions) : name;
}

function checkObjects(p: ParsedArgs): void {
  for (const o of all(p, "object")) {
    const kv = toRecord(parseKeyValues(o, "qom-type"));
    if (kv["qom-type"] !== "secret") fail(`Invalid object type '${kv["qom-type"] ?? ""}'`);
  }
}

function options(p: ParsedArgs): { record: Record<string, string>; help: boolean } {
  const joined = all(p, "o").join(",");
  const kvs = joined ? parseKeyValues(joined) : [];
  return { record: toRecord(kvs), help: wantsHelp(kvs) };
}

function one(p: ParsedArgs, what = "image file name"): string {
  if (p.positionals.length < 1) fail(`Expecting one ${what}`);
  if (p.positionals.length > 1) fail(`Expecting one ${what}`);
  return p.positionals[0];
}

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "-h" || cmd === "--help" || cmd === "help") {
    io.out(USAGE);
    return cmd ? 0 : 1;
  }
  if (cmd === "-V" || cmd === "--version") {
    io.out("qimg version 0.1.0 (qemu-img compatible)\n");
    return 0;
  }
  const spec = COMMAND_SPECS[cmd];
  if (!spec) fail(`Command not found: ${cmd}`);
  const p = parseArgs(rest, spec);
  if (has(p, "h")) {
    io.out(USAGE);
    return 0;
  }
  checkObjects(p);
  const forceShare = has(p, "U");
  const quiet = has(p, "q");
  switch (cmd) {
    case "create": {
      const format = last(p, "f") ?? "raw";
      const o = options(p);
      if (o.help) {
        io.out(optionsHelp(format));
        return 0;
      }
      if (p.positionals.length < 1) fail("Expecting image file name");
      if (p.positionals.length > 2) fail("Unexpected argument: " + p.positionals[2]);
      let size: number | undefined;
      if (p.positionals[1] !== undefined) {
        try {
          size = parseSize(p.positionals[1]);
        } catch {
          fail(
            "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n" +
              "qimg: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
          );
        }
      }
      return createCommand(
        {
          filename: p.positionals[0],
          format,
          size,
          options: o.record,
          backingFile: last(p, "b"),
          backingFormat: last(p, "F"),
          unsafe: has(p, "u"),
          quiet,
        },
        io,
      );
    }
    case "info":
      return infoCommand(
        {
          image: image(p, one(p)),
          format: last(p, "f"),
          output: output(p),
          backingChain: has(p, "backing-chain"),
          forceShare,
        },
        io,
      );
    case "check": {
      const r = last(p, "r");
      if (r !== undefined && r !== "leaks" && r !== "all")
        fail(`Unknown option value for -r (expecting 'leaks' or 'all'): ${r}`);
      return checkCommand(
        { image: image(p, one(p)), format: last(p, "f"), output: output(p), repair: r, forceShare, quiet },
        io,
      );
    }
    case "compare": {
      if (p.positionals.length !== 2) fail("Expecting two image file names");
      return compareCommand(
        {
          a: image(p, p.positionals[0]),
          b: image(p, p.positionals[1]),
          formatA: last(p, "f"),
          formatB: last(p, "F"),
          strict: has(p, "s"),
          forceShare,
          progress: has(p, "p"),
          quiet,
        },
        io,
      );
    }
    case "map": {
      const s = last(p, "s");
      const l = last(p, "l");
      return mapCommand(
        {
          image: image(p, one(p)),
          format: last(p, "f"),
          output: output(p),
          startOffset: s === undefined ? undefined : parseSize(s),
          maxLength: l === undefined ? undefined : parseSize(l),
          forceShare,
        },
        io,
      );
    }
    case "convert": {
      const o = options(p);
      const targetFormat = last(p, "O") ?? "raw";
      if (o.help) {
        io.out(optionsHelp(targetFormat));
        return 0;
      }
      for (const unsupported of ["l", "s", "r", "C", "salvage", "bitmaps", "target-image-opts"]) {
        if (has(p, unsupported)) {
          throw new QimgError(
            "ERR_QIMG_UNSUPPORTED",
            `convert option ${unsupported.length > 1 ? "--" : "-"}${unsupported} is not supported yet`,
          );
        }
      }
      if (p.positionals.length < 2) fail("Expecting image file name");
      const m = Number(last(p, "m") ?? "8");
      if (!Number.isInteger(m) || m < 1 || m > 32)
        fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 32");
      const S = last(p, "S");
      const sparse = S === undefined ? 4096 : parseSize(S);
      if (has(p, "target-is-zero") && !has(p, "n")) fail("--target-is-zero requires use of -n flag");
      const ac = new AbortController();
      process.once("SIGINT", () => ac.abort());
      return convertCommand(
        {
          sources: p.positionals.slice(0, -1).map((s) => image(p, s)),
          target: p.positionals[p.positionals.length - 1],
          sourceFormat: last(p, "f"),
          targetFormat,
          options: o.record,
          noCreate: has(p, "n"),
          targetIsZero: has(p, "target-is-zero"),
          sparseSize: sparse,
          parallel: m,
          outOfOrder: has(p, "W"),
          forceShare,
          compress: has(p, "c"),
          backingFile: last(p, "B"),
          backingFormat: last(p, "F"),
          progress: has(p, "p"),
          quiet,
          signal: ac.signal,
        },
        io,
      );
    }
  }
  return fail(`Command not found: ${cmd}`);
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    io.err(`qimg: ${msg}\n`);
    process.exitCode = process.argv[2] === "compare" ? 2 : 1;
  },
);
