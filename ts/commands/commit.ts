/** `qimg commit`: qemu-img's commit, printing `Image committed.` unless `-q`. */
import type { ImageOptions } from "../graph/spec.js";
import { commit } from "../jobs/commit.js";
import type { Io } from "./output.js";
import { progressBar } from "./progress.js";

/** What the `commit` command needs. */
export interface CommitArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `-b`. */
  base?: string;
  /** `-d`. */
  drop: boolean;
  /** `-r`. */
  rateLimit?: number;
  /** `-t`. */
  cache?: string;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** Cancellation (SIGINT). */
  signal?: AbortSignal;
}

/** Run `commit`; returns the exit code. */
export async function commitCommand(a: CommitArgs, io: Io): Promise<number> {
  const job = commit(a.image, {
    format: a.format,
    base: a.base,
    keepTop: a.drop,
    rateLimit: a.rateLimit,
    cache: a.cache,
    signal: a.signal,
  });
  if (a.progress && !a.quiet) progressBar(job, io);
  await job;
  if (!a.quiet) io.out("Image committed.\n");
  return 0;
}
