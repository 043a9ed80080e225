/**
 * `convert()`: copy one or more source images (concatenated, as qemu-img does) into a target.
 *
 * TypeScript schedules; Rust copies. The guest range is cut into chunks (≥ 2 MiB, cluster-aligned)
 * and up to `parallel` chunks are in flight, each one native call that does block status, read,
 * zero detection and write. Zero and unallocated ranges are skipped on a zero-initialized target.
 * The job resolves only after the target is flushed and closed.
 */
import { QimgError } from "../errors.js";
import { open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { Image, SnapshotSelector } from "../image.js";
import { callNative, native } from "../native.js";
import { create } from "./create.js";
import { Job, type Progress, throwIfAborted } from "./job.js";

/** Options of {@link convert}. */
export interface ConvertOptions {
  /** Source format (`-f`); probed when absent. */
  sourceFormat?: string;
  /** Target format (`-O`, default raw). */
  targetFormat?: string;
  /** Target create options (`-o`). */
  targetOptions?: Record<string, string | number | boolean>;
  /** `-n`: the target exists; do not create it. */
  noCreate?: boolean;
  /** `--target-is-zero` (with `-n`): the existing target reads as zeros. */
  targetIsZero?: boolean;
  /** `-S` in bytes (default 4096; 0 = write everything). */
  sparseSize?: number;
  /** `-m`: chunks in flight (default 8). */
  parallel?: number;
  /** `-W`: allow out-of-order writes (qimg always writes whole chunks; accepted for compatibility). */
  outOfOrder?: boolean;
  /** `-B`: the target gets this backing file and only the source's top layer is copied. */
  backingFile?: string;
  /** `-F`: format of the `-B` backing file. */
  backingFormat?: string;
  /** `-c`: write the target's clusters compressed (qcow2; `-o compression_type=zlib|zstd`). */
  compress?: boolean;
  /**
   * `-l`: convert an internal snapshot of the (single) source instead of its active layer; a
   * string is an ID, else a name.
   */
  snapshot?: SnapshotSelector;
  /** `-U` for the sources. */
  forceShare?: boolean;
  /** Cancellation. */
  signal?: AbortSignal;
  /** Chunk size in bytes (default 4 MiB). */
  chunkSize?: number;
}

/** What a finished convert did. */
export interface ConvertResult {
  /** Guest bytes covered. */
  totalBytes: number;
  /** Bytes read from the sources. */
  bytesRead: number;
  /** Bytes written to the target as data. */
  bytesWritten: number;
  /** Bytes found to be zero (skipped or written as zeroes). */
  bytesZero: number;
}

/** Convert `sources` into `target`. */
export function convert(
  sources: string | ImageOptions | Array<string | ImageOptions>,
  target: string,
  opts: ConvertOptions = {},
): Job<ConvertResult> {
  return new Job((report) => runConvert(Array.isArray(sources) ? sources : [sources], target, opts, report));
}

async function runConvert(
  specs: Array<string | ImageOptions>,
  target: string,
  opts: ConvertOptions,
  report: (p: Progress) => void,
): Promise<ConvertResult> {
  const parallel = opts.parallel ?? 8;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 32) {
    throw new QimgError(
      "ERR_QIMG_INVALID_ARGUMENT",
      "Invalid number of coroutines. Allowed number of coroutines is between 1 and 32",
    );
  }
  if (opts.targetIsZero && !opts.noCreate) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "--target-is-zero requires use of -n flag");
  }
  const sparseSize = opts.sparseSize ?? 4096;
  const sources: Image[] = [];
  const parents: Image[] = [];
  let dst: Image | undefined;
  let failure: unknown;
  let out: ConvertResult | undefined;
  try {
    for (const s of specs) {
      sources.push(await open(s, { format: opts.sourceFormat, readOnly: true, forceShare: opts.forceShare }));
    }
    if (opts.snapshot !== undefined) {
      if (sources.length !== 1) {
        throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "No support for concatenating multiple snapshot");
      }
      const parent = sources[0];
      const view = await parent.snapshotView(opts.snapshot).catch((e: unknown) => {
        const notFound = e instanceof QimgError && e.code === "ERR_QIMG_NOT_FOUND";
        throw new QimgError(
          notFound ? "ERR_QIMG_NOT_FOUND" : "ERR_QIMG_UNSUPPORTED",
          `Failed to load snapshot: ${notFound ? "Can't find snapshot" : (e as Error).message}`,
          { path: parent.filename, cause: e },
        );
      });
      // The view reads through the parent's backing chain: close it first.
      sources.unshift(view);
      sources.length = 1;
      parents.push(parent);
    }
    const total = sources.reduce((a, s) => a + s.virtualSize, 0);
    const targetFormat = opts.targetFormat ?? "raw";
    if (!opts.noCreate) {
      await create(target, {
        format: targetFormat,
        size: total,
        options: opts.targetOptions,
        backingFile: opts.backingFile,
        backingFormat: opts.backingFormat,
      });
    }
    dst = await open(target, { format: targetFormat, readOnly: false });
    if (opts.noCreate && dst.virtualSize < total) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Target image is smaller than the source", {
        path: target,
      });
    }
    const targetZeroed = !opts.noCreate || !!opts.targetIsZero;
    const topOnly = opts.backingFile !== undefined;
    if (topOnly && opts.noCreate) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Use of -B and -n together is not supported");
    }
    const result: ConvertResult = { totalBytes: total, bytesRead: 0, bytesWritten: 0, bytesZero: 0 };
    const chunk = opts.chunkSize ?? 4 << 20;
    const jobs: Array<{ src: Image; srcOff: number; dstOff: number; len: number }> = [];
    let base = 0;
    for (const src of sources) {
      for (let off = 0; off < src.virtualSize; off += chunk) {
        jobs.push({ src, srcOff: off, dstOff: base + off, len: Math.min(chunk, src.virtualSize - off) });
      }
      base += src.virtualSize;
    }
    let next = 0;
    let done = 0;
    report({ done: 0, total });
    const d = dst;
    const worker = async () => {
      while (next < jobs.length) {
        throwIfAborted(opts.signal);
        const j = jobs[next++];
        const st = await callNative(() =>
          native.copyRange(j.src.native, d.native, j.srcOff, j.len, j.dstOff, {
            sparseSize,
            targetZeroed,
            topOnly,
            compress: !!opts.compress,
          }),
        );
        result.bytesRead += st.bytesRead;
        result.bytesWritten += st.bytesWritten;
        result.bytesZero += st.bytesZero;
        done += j.len;
        report({ done, total });
      }
    };
    const workers = Array.from({ length: Math.min(parallel, Math.max(jobs.length, 1)) }, worker);
    const settled = await Promise.allSettled(workers);
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    await dst.flush();
    out = result;
  } catch (e) {
    failure = e;
  }
  // Close flushes the target even after a failure or abort, so what was written stays consistent.
  if (dst) await dst.close().catch((e) => (failure ??= e));
  for (const s of [...sources, ...parents]) await s.close().catch(() => undefined);
  if (failure !== undefined || !out) throw failure;
  return out;
}
