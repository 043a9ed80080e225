#!/usr/bin/env node
import { amendCommand } from "../commands/amend.js";
import { benchCommand } from "../commands/bench.js";
/**
 * The `qimg` command line: qemu-img's syntax for create, info, convert, check, compare, map,
 * commit and rebase.
 * `parseCommandLine` (ts/options) turns argv into a typed command; this file runs it. Errors print
 * as `qimg: message` on stderr with qemu-img's exit codes (1, or 2 for compare).
 */
import { bitmapCommand } from "../commands/bitmap.js";
import { checkCommand } from "../commands/check.js";
import { commitCommand } from "../commands/commit.js";
import { compareCommand } from "../commands/compare.js";
import { convertCommand } from "../commands/convert.js";
import { createCommand, optionsHelp } from "../commands/create.js";
import { infoCommand } from "../commands/info.js";
import { mapCommand } from "../commands/map.js";
import { measureCommand } from "../commands/measure.js";
import type { Io } from "../commands/output.js";
import { rebaseCommand } from "../commands/rebase.js";
import { resizeCommand } from "../commands/resize.js";
import { serveCommand } from "../commands/serve.js";
import { snapshotCommand } from "../commands/snapshot.js";
import { QimgError } from "../errors.js";
import { setDefaultSignal } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { defineObjects } from "../graph/tls.js";
import { listNbdExports } from "../jobs/nbd-list.js";
import { type Command, parseCommandLine } from "../options/commands/index.js";
import { toRecord } from "../options/keyvalue.js";
import { loadSecrets, setDefaultObjects } from "../options/secrets.js";

const io: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

const USAGE = `qimg: QEMU's block layer for Node.js — a qemu-img compatible command line
usage: qimg [standard options] command [command options]

Commands:
  create [-q] [--object objectdef] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  convert [--object objectdef] [--image-opts] [--target-is-zero] [-U] [-p] [-q] [-n] [-c [--compress-threads N] [--compress-level L]] [-f fmt] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename
  check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] filename
  compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] filename1 filename2
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap
  map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
  commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename
  rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-c] -b backing_file [-F backing_fmt] filename
  snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] [-f fmt] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] [-U] filename]
  resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size
  amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename
  list-exports [--object objectdef] [--output=ofmt] nbd-address   (qimg only: NBD_OPT_LIST)
  serve [--object objectdef] [--image-opts] [-f fmt] [-x name] [-D description] [-r] [-k socket | -b addr -p port] [-t] [-e shared] [-A] [--tls-creds id] [--pid-file path] filename
`;

const image = (i: string | Record<string, unknown>) => i as string | ImageOptions;

function unsupported(what: string): never {
  throw new QimgError("ERR_QIMG_UNSUPPORTED", `convert option ${what} is not supported yet`);
}

async function run(c: Command, signal: AbortSignal): Promise<number> {
  if ("objects" in c) defineObjects(c.objects);
  switch (c.cmd) {
    case "help":
      io.out(USAGE);
      return 0;
    case "version":
      io.out("qimg version 0.1.0 (qemu-img compatible)\n");
      return 0;
    case "object-help":
      io.out("List of user creatable objects:\n  secret\n");
      return 0;
    case "options-help":
      io.out(optionsHelp(c.format));
      return 0;
    case "create":
      return createCommand(
        {
          filename: c.filename,
          format: c.format,
          size: c.size,
          options: toRecord(c.options),
          backingFile: c.backingFile,
          backingFormat: c.backingFormat,
          unsafe: c.unsafe,
          quiet: c.quiet,
        },
        io,
      );
    case "info":
      return infoCommand(
        {
          image: image(c.image),
          format: c.format,
          output: c.output,
          backingChain: c.backingChain,
          forceShare: c.forceShare,
        },
        io,
      );
    case "check":
      return checkCommand(
        {
          image: image(c.image),
          format: c.format,
          output: c.output,
          repair: c.repair,
          forceShare: c.forceShare,
          quiet: c.quiet,
        },
        io,
      );
    case "compare":
      return compareCommand(
        {
          a: image(c.imageA),
          b: image(c.imageB),
          formatA: c.formatA,
          formatB: c.formatB,
          strict: c.strict,
          forceShare: c.forceShare,
          progress: c.progress,
          quiet: c.quiet,
        },
        io,
      );
    case "list-exports": {
      const list = await listNbdExports(c.address);
      if (c.output === "json") io.out(`${JSON.stringify(list, null, 4)}\n`);
      else for (const e of list) io.out(e.description ? `${e.name}\t${e.description}\n` : `${e.name}\n`);
      return 0;
    }
    case "map":
      return mapCommand(
        {
          image: image(c.image),
          format: c.format,
          output: c.output,
          startOffset: c.startOffset,
          maxLength: c.maxLength,
          forceShare: c.forceShare,
        },
        io,
      );
    case "snapshot":
      return snapshotCommand(
        {
          image: image(c.image),
          format: c.format,
          action: c.action,
          forceShare: c.forceShare,
          quiet: c.quiet,
        },
        io,
      );
    case "measure":
      return measureCommand(
        {
          source: c.image === undefined ? (c.size ?? 0n) : image(c.image),
          format: c.format,
          targetFormat: c.targetFormat,
          options: toRecord(c.options),
          snapshot: c.snapshot,
          output: c.output,
          forceShare: c.forceShare,
        },
        io,
      );
    case "resize":
      return resizeCommand(
        {
          image: image(c.image),
          format: c.format,
          size: c.size,
          relative: c.relative,
          preallocation: c.preallocation,
          shrink: c.shrink,
          quiet: c.quiet,
        },
        io,
      );
    case "amend":
      return amendCommand(
        {
          image: c.image === undefined ? undefined : image(c.image),
          format: c.format,
          options: toRecord(c.options),
          help: c.help,
          progress: c.progress,
          quiet: c.quiet,
          force: c.force,
          cache: c.cache,
        },
        io,
      );
    case "convert":
      if (c.salvage) unsupported("--salvage");
      if (c.targetImageOpts) unsupported("--target-image-opts");
      return convertCommand(
        {
          sources: c.sourceImages.map(image),
          target: c.target,
          sourceFormat: c.srcFormat,
          targetFormat: c.targetFormat ?? "raw",
          options: toRecord(c.options),
          noCreate: c.noCreate,
          targetIsZero: c.targetIsZero,
          sparseSize: c.sparseSize,
          parallel: c.parallel,
          outOfOrder: c.outOfOrder,
          forceShare: c.forceShare,
          sourceCache: c.srcCache,
          targetCache: c.targetCache,
          snapshot:
            c.snapshot &&
            (c.snapshot.idOrName ? c.snapshot.name : { id: c.snapshot.id, name: c.snapshot.name }),
          compress: c.compress,
          compressThreads: c.compressThreads,
          compressLevel: c.compressLevel,
          bitmaps: c.bitmaps,
          skipBrokenBitmaps: c.skipBrokenBitmaps,
          backingFile: c.backing,
          backingFormat: c.backingFormat,
          progress: c.progress,
          quiet: c.quiet,
          signal,
        },
        io,
      );
    case "commit":
      return commitCommand(
        {
          image: image(c.image),
          format: c.format,
          base: c.base,
          drop: c.drop,
          rateLimit: c.rateLimit,
          cache: c.cache,
          progress: c.progress,
          quiet: c.quiet,
          signal,
        },
        io,
      );
    case "rebase":
      return rebaseCommand(
        {
          image: image(c.image),
          format: c.format,
          backingFile: c.backingFile,
          backingFormat: c.backingFormat,
          unsafe: c.unsafe,
          compress: c.compress,
          forceShare: c.forceShare,
          cache: c.cache,
          sourceCache: c.srcCache,
          progress: c.progress,
          quiet: c.quiet,
          signal,
        },
        io,
      );
    case "bitmap":
      return bitmapCommand(
        {
          image: image(c.image),
          format: c.format,
          bitmap: c.bitmap,
          steps: c.actions,
          granularity: c.granularity || undefined,
          sourceFile: c.sourceFile,
          sourceFormat: c.sourceFormat,
        },
        io,
      );
    case "bench":
      return benchCommand(c, io);
    case "serve":
      return serveCommand(
        {
          image: image(c.image),
          format: c.format,
          exportName: c.exportName,
          description: c.description,
          readOnly: c.readOnly,
          socket: c.socket,
          bind: c.bind,
          port: c.port,
          persistent: c.persistent,
          shared: c.shared,
          tls: c.tls,
          pidFile: c.pidFile,
          allocationDepth: c.allocationDepth,
          signal,
        },
        io,
      );
    default:
      return fail(c);
  }
}

/** Exhaustiveness: every command kind is handled above. */
function fail(c: never): never {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `unknown command ${JSON.stringify(c)}`);
}

const argv = process.argv.slice(2);
const ac = new AbortController();
process.once("SIGINT", () => ac.abort());
// Opens too (key derivation of an encrypted image can run for seconds): SIGINT stops them.
setDefaultSignal(ac.signal);
Promise.resolve()
  .then(() => {
    if (argv.length === 0) {
      io.err(USAGE);
      return 1;
    }
    const cmd = parseCommandLine(argv);
    if ("objects" in cmd && Array.isArray(cmd.objects)) {
      loadSecrets(cmd.objects);
      setDefaultObjects(cmd.objects);
    }
    return run(cmd, ac.signal);
  })
  .then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      const msg = e instanceof Error ? e.message : String(e);
      io.err(`qimg: ${msg}\n`);
      process.exitCode = argv[0] === "compare" ? 2 : 1;
    },
  );
