/** `qimg compare`: exit 0 identical, 1 different, 2 on error (as qemu-img). */
import type { ImageOptions } from "../graph/spec.js";
import { compare } from "../jobs/compare.js";
import type { Io } from "./output.js";
import { progressBar } from "./progress.js";

/** What the `compare` command needs. */
export interface CompareArgs {
  /** First image. */
  a: string | ImageOptions;
  /** Second image. */
  b: string | ImageOptions;
  /** `-f`. */
  formatA?: string;
  /** `-F`. */
  formatB?: string;
  /** `-s`. */
  strict: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
}

/** Run `compare`; returns the exit code. */
export async function compareCommand(a: CompareArgs, io: Io): Promise<number> {
  const job = compare(a.a, a.b, {
    formatA: a.formatA,
    formatB: a.formatB,
    strict: a.strict,
    forceShare: a.forceShare,
  });
  if (a.progress && !a.quiet) progressBar(job, io);
  const r = await job;
  if (r.identical) {
    if (!a.quiet) io.out("Images are identical.\n");
    return 0;
  }
  if (!a.quiet) {
    if (r.sizeMismatch) io.out("Strict mode: Image size mismatch!\n");
    else io.out(`Content mismatch at offset ${r.mismatchOffset}!\n`);
  }
  return 1;
}
