/** `qimg convert`: qemu-img's convert with -p progress. */
import type { ImageOptions } from "../graph/spec.js";
import type { SnapshotSelector } from "../image.js";
import { convert } from "../jobs/convert.js";
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
  /** `-B`. */
  backingFile?: string;
  /** `-F`. */
  backingFormat?: string;
  /** `-U`. */
  forceShare: boolean;
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
    snapshot: a.snapshot,
    backingFile: a.backingFile,
    backingFormat: a.backingFormat,
    compress: a.compress,
    signal: a.signal,
  });
  if (a.progress && !a.quiet) progressBar(job, io);
  await job;
  return 0;
}
