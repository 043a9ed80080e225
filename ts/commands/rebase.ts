/** `qimg rebase`: qemu-img's rebase (safe, or `-u`), silent on success. */
import type { ImageOptions } from "../graph/spec.js";
import { rebase } from "../jobs/rebase.js";
import type { Io } from "./output.js";
import { progressBar } from "./progress.js";

/** What the `rebase` command needs. */
export interface RebaseArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `-b` ("" or absent with `-u`: no backing file). */
  backingFile?: string;
  /** `-F`. */
  backingFormat?: string;
  /** `-u`. */
  unsafe: boolean;
  /** `-c`. */
  compress: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `-t`. */
  cache?: string;
  /** `-T`. */
  sourceCache?: string;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** Cancellation (SIGINT). */
  signal?: AbortSignal;
}

/** Run `rebase`; returns the exit code. */
export async function rebaseCommand(a: RebaseArgs, io: Io): Promise<number> {
  const job = rebase(a.image, {
    format: a.format,
    backingFile: a.backingFile ?? "",
    backingFormat: a.backingFormat,
    unsafe: a.unsafe,
    compress: a.compress,
    forceShare: a.forceShare,
    cache: a.cache,
    sourceCache: a.sourceCache,
    signal: a.signal,
  });
  if (a.progress && !a.quiet) progressBar(job, io);
  await job;
  return 0;
}
