/** `qimg convert`: qemu-img's convert with -p progress. */

import type { ImageOptions } from "../graph/spec.js";
import type { SnapshotSelector } from "../image.js";
import { convert } from "../jobs/convert.js";
import { legacyAesWarning } from "../jobs/create-encryption.js";
import type { Io } from "./output.js";
import { progressBar } from "./progress.js";

/** What the `convert` command needs. */
export interface ConvertArgs {
  /** Sources (concatenated). */
  sources: Array<string | ImageOptions>;
  /** Target file. */
  target: string;
  /** `-f`. */
  sourceFormat?: string;
  /** `-O` (default raw). */
  targetFormat: string;
  /** `-o`. */
  options: Record<string, string>;
  /** `-n`. */
  noCreate: boolean;
  /** `--target-is-zero`. */
  targetIsZero: boolean;
  /** `-S` bytes. */
  sparseSize: number;
  /** `-m`. */
  parallel: number;
  /** `-W`. */
  outOfOrder: boolean;
  /** `-c`. */
  compress: boolean;
  /** `--compress-threads`. */
  compressThreads?: number;
  /** `--compress-level`. */
  compressLevel?: number;
  /** `-B`. */
  backingFile?: string;
  /** `-F`. */
  backingFormat?: string;
  /** `--bitmaps`. */
  bitmaps?: boolean;
  /** `--skip-broken-bitmaps`. */
  skipBrokenBitmaps?: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `-T`: source cache mode. */
  sourceCache?: string;
  /** `-t`: target cache mode. */
  targetCache?: string;
  /** `-l`: convert this internal snapshot of the source. */
  snapshot?: SnapshotSelector;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** Cancellation (SIGINT). */
  signal?: AbortSignal;
}

/** Run `convert`; returns the exit code. */
export async function convertCommand(a: ConvertArgs, io: Io): Promise<number> {
  const job = convert(a.sources, a.target, {
    sourceFormat: a.sourceFormat,
    targetFormat: a.targetFormat,
    targetOptions: a.options,
    noCreate: a.noCreate,
    targetIsZero: a.targetIsZero,
    sparseSize: a.sparseSize,
    parallel: a.parallel,
    outOfOrder: a.outOfOrder,
    forceShare: a.forceShare,
    sourceCache: a.sourceCache,
    targetCache: a.targetCache,
    snapshot: a.snapshot,
    backingFile: a.backingFile,
    backingFormat: a.backingFormat,
    compress: a.compress,
    compressThreads: a.compressThreads,
    compressLevel: a.compressLevel,
    bitmaps: a.bitmaps,
    skipBrokenBitmaps: a.skipBrokenBitmaps,
    signal: a.signal,
  });
  if (a.progress && !a.quiet) progressBar(job, io);
  const warn = legacyAesWarning(a.targetFormat ?? "raw", a.options);
  if (warn) io.err(`qimg: ${warn}\n`);
  const r = await job;
  for (const n of r.skippedBitmaps ?? []) io.err(`qimg: warning: Skipping inconsistent bitmap '${n}'\n`);
  return 0;
}
