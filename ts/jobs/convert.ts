/**
 * `convert()`: copy one or more source images (concatenated, as qemu-img does) into a target.
 *
 * TypeScript schedules; Rust copies. The guest range is cut into chunks (≥ 2 MiB, cluster-aligned)
 * and up to `parallel` chunks are in flight, each one native call that does block status, read,
 * zero detection and write. Zero and unallocated ranges are skipped on a zero-initialized target.
 * The job resolves only after the target is flushed and closed.
 */
import { availableParallelism } from "node:os";
import { QimgError } from "../errors.js";
import { open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { Image, SnapshotSelector } from "../image.js";
import { callNative, native } from "../native.js";
import { brokenBitmaps, copyBitmaps } from "./bitmap.js";
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
   * `--compress-threads` (beyond qemu-img): threads compressing clusters with `compress`, default
   * every core (then libuv's whole pool compresses, so I/O waits overlap). Chunks in flight are
   * bounded by `parallel` and libuv's pool; each chunk splits its clusters over the remaining
   * threads.
   */
  compressThreads?: number;
  /** `--compress-level` (beyond qemu-img): zlib 1..9, zstd 1..22; default the format's (6, 3). */
  compressLevel?: number;
  /** `--bitmaps`: copy the source's persistent bitmaps (single source, qcow2 v3 target). */
  bitmaps?: boolean;
  /** `--skip-broken-bitmaps`: skip inconsistent bitmaps instead of failing. */
  skipBrokenBitmaps?: boolean;
  /**
   * `-l`: convert an internal snapshot of the (single) source instead of its active layer; a
   * string is an ID, else a name.
   */
  snapshot?: SnapshotSelector;
  /** `-U` for the sources. */
  forceShare?: boolean;
  /**
   * `-T`: cache mode of the sources' host files (`writeback` default; `none` reads with O_DIRECT).
   * As `open`'s `cache` option.
   */
  sourceCache?: string;
  /**
   * `-t`: cache mode of the target's host file (`writeback` default; `none`/`directsync` write
   * with O_DIRECT, `writethrough`/`directsync` with O_DSYNC). `unsafe` drops intermediate flushes
   * but, unlike qemu-img, the target is still flushed before the job resolves.
   */
  targetCache?: string;
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
  /** With `skipBrokenBitmaps`: inconsistent bitmaps that were not copied. */
  skippedBitmaps?: string[];
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
  const compressThreads = opts.compressThreads ?? availableParallelism();
  if (!Number.isInteger(compressThreads) || compressThreads < 1 || compressThreads > 256) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "compressThreads must be an integer between 1 and 256");
  }
  // Chunks in flight at once: with compression, no more than the threads asked for.
  // An explicit thread count is a bound: no more chunks in flight than threads. By default the
  // pool's threads all compress (at least one per core), so I/O waits overlap with compression.
  const inFlight = !opts.compress
    ? parallel
    : opts.compressThreads === undefined
      ? Math.min(parallel, Math.max(compressThreads, uvPoolSize()))
      : Math.min(parallel, compressThreads, uvPoolSize());
  const perChunkThreads = Math.max(1, Math.ceil(compressThreads / inFlight));
  if (opts.compressLevel !== undefined && !opts.noCreate) {
    const zstd = String(opts.targetOptions?.compression_type ?? "zlib") === "zstd";
    const max = zstd ? 22 : 9;
    if (!Number.isInteger(opts.compressLevel) || opts.compressLevel < 1 || opts.compressLevel > max) {
      throw new QimgError(
        "ERR_QIMG_INVALID_ARGUMENT",
        `Compression level ${opts.compressLevel} is out of range for ${zstd ? "zstd" : "zlib"} (1..${max})`,
      );
    }
  }
  const sources: Image[] = [];
  const parents: Image[] = [];
  let dst: Image | undefined;
  let failure: unknown;
  let out: ConvertResult | undefined;
  try {
    for (const s of specs) {
      sources.push(
        await open(s, {
          format: opts.sourceFormat,
          readOnly: true,
          forceShare: opts.forceShare,
          cache: opts.sourceCache,
          signal: opts.signal,
        }),
      );
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
    if (opts.bitmaps) await checkBitmapCopy(sources, targetFormat, opts);
    if (!opts.noCreate) {
      await create(target, {
        format: targetFormat,
        size: total,
        options: opts.targetOptions,
        backingFile: opts.backingFile,
        backingFormat: opts.backingFormat,
      });
    }
    dst = await open(target, {
      format: targetFormat,
      readOnly: false,
      keySecret: targetKeySecret(targetFormat, opts.targetOptions),
      cache: opts.targetCache,
      signal: opts.signal,
    });
    if (opts.compress && (await callNative(() => (dst as Image).chain[0].info())).encrypted) {
      throw new QimgError(
        "ERR_QIMG_UNSUPPORTED",
        "Compression and encryption not supported at the same time",
      );
    }
    if (opts.noCreate && dst.virtualSize < total) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Target image is smaller than the source", {
        path: target,
      });
    }
    // A new luks payload decrypts to noise, not zeros (QEMU's crypto driver has no zero init).
    let targetZeroed = (!opts.noCreate && targetFormat !== "luks") || !!opts.targetIsZero;
    const topOnly = opts.backingFile !== undefined;
    if (topOnly && opts.noCreate) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Use of -B and -n together is not supported");
    }
    // As qemu-img: a target without zero init or backing is zeroed up front when that is fast
    // (NBD `WRITE_ZEROES` + `FAST_ZERO` over the whole export); zero ranges are then skipped.
    if (!targetZeroed && !topOnly) {
      const d0 = dst;
      targetZeroed = await callNative(() => d0.native.makeZeroFast());
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
            layers: topOnly ? 1 : undefined,
            compress: !!opts.compress,
            compressLevel: opts.compressLevel,
            compressThreads: perChunkThreads,
          }),
        );
        result.bytesRead += st.bytesRead;
        result.bytesWritten += st.bytesWritten;
        result.bytesZero += st.bytesZero;
        done += j.len;
        report({ done, total });
      }
    };
    const workers = Array.from({ length: Math.min(inFlight, Math.max(jobs.length, 1)) }, worker);
    const settled = await Promise.allSettled(workers);
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    if (opts.bitmaps) result.skippedBitmaps = await copyBitmaps(sources[0], dst, !!opts.skipBrokenBitmaps);
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

/** Threads in libuv's pool, where native chunk calls run (UV_THREADPOOL_SIZE, default 4). */
function uvPoolSize(): number {
  const n = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? n : 4;
}

/** qemu-img convert's checks for `--bitmaps`, before the target is created. */
async function checkBitmapCopy(sources: Image[], targetFormat: string, opts: ConvertOptions): Promise<void> {
  const fail = (m: string) => {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", m);
  };
  if (opts.skipBrokenBitmaps && !opts.bitmaps) fail("Use of --skip-broken-bitmaps requires --bitmaps");
  if (sources.length !== 1) fail("Copying bitmaps only possible with single source");
  const compat = String(opts.targetOptions?.compat ?? "1.1");
  if (targetFormat !== "qcow2" || compat === "0.10" || compat === "v2")
    fail(`Format driver '${targetFormat}' does not support bitmaps`);
  if (sources[0].format !== "qcow2") fail("Source lacks bitmap support");
  const broken = await brokenBitmaps(sources[0]);
  if (broken.length > 0 && !opts.skipBrokenBitmaps) {
    fail(
      `Cannot copy inconsistent bitmap '${broken[0]}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`,
    );
  }
}

/** The secret id a new target's encryption was created with (`encrypt.key-secret`, luks `key-secret`). */
function targetKeySecret(
  format: string,
  o: Record<string, string | number | boolean> | undefined,
): string | undefined {
  const v = format === "luks" ? o?.["key-secret"] : o?.["encrypt.key-secret"];
  return v === undefined ? undefined : String(v);
}
