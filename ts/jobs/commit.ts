/**
 * `commit()`: write what the layers above a base image allocate into the base, as
 * `qemu-img commit` does. Without `base` the base is the image's backing file and the image is
 * emptied afterwards (unless `drop` is false, `-d`); with `base` (deeper in the chain) the image is
 * left as it is, since the layers between would no longer be consistent with it.
 */

import { isAbsolute, resolve } from "node:path";
import { QimgError } from "../errors.js";
import { open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { Image } from "../image.js";
import { callNative, native } from "../native.js";
import type { QomObject } from "../options/object.js";
import { forEachChunk } from "./chunks.js";
import { Job } from "./job.js";

/** Options of {@link commit}. */
export interface CommitOptions {
  /** Format of the image (`-f`); probed when absent. */
  format?: string;
  /** `-b`: the base to commit into, as named in the chain; default the backing file. */
  base?: string;
  /** `-d`: keep the image's contents (do not empty it). Implied by `base`. */
  keepTop?: boolean;
  /** `-r`: bytes per second at most. */
  rateLimit?: number;
  /** `-t`: cache mode of the chain's host files (`none`, `writeback`, ... as `open`). */
  cache?: string;
  /** Cancellation between chunks. */
  signal?: AbortSignal;
  /** Secret objects for encrypted layers (default: the CLI's `--object`s, as for `open`). */
  objects?: readonly QomObject[];
}

/** What a finished commit did. */
export interface CommitResult {
  /** Guest bytes of the image. */
  totalBytes: number;
  /** Chain index of the base that received the data (1 = the backing file). */
  baseDepth: number;
  /** True if the image was emptied. */
  emptied: boolean;
}

/** Where `base` sits in the chain (index ≥ 1), matching the stored name or the resolved path. */
function findBase(img: Image, base: string, top: string): number {
  const want = isAbsolute(base) ? base : resolve(base);
  for (let i = 1; i < img.chainFilenames.length; i++) {
    const f = img.chainFilenames[i];
    if (f === base || resolve(f) === want) return i;
  }
  throw new QimgError(
    "ERR_QIMG_INVALID_ARGUMENT",
    `Did not find '${base}' in the backing chain of '${top}'`,
    {
      path: top,
    },
  );
}

/** Commit `image` into its backing file (or `opts.base`). */
export function commit(image: string | ImageOptions, opts: CommitOptions = {}): Job<CommitResult> {
  return new Job(async (report) => {
    const name = typeof image === "string" ? image : String(image.filename ?? "");
    // First a read-only look at the chain, to find the base; then the real open with the base
    // (and the image itself, if it is to be emptied) writable.
    const probe = await open(image, {
      format: opts.format,
      readOnly: true,
      signal: opts.signal,
      objects: opts.objects,
    });
    let baseDepth: number;
    try {
      if (probe.chainFilenames.length < 2) {
        throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Image does not have a backing file", {
          path: name,
        });
      }
      baseDepth = opts.base === undefined ? 1 : findBase(probe, opts.base, name);
    } finally {
      await probe.close();
    }
    const emptyTop = !opts.keepTop && opts.base === undefined;
    const img = await open(image, {
      format: opts.format,
      readOnly: !emptyTop,
      writableLayers: [baseDepth],
      cache: opts.cache,
      signal: opts.signal,
      objects: opts.objects,
    });
    let failure: unknown;
    const totalBytes = img.virtualSize;
    try {
      const top = img.native;
      const base = img.chain[baseDepth];
      if (base.virtualSize < top.virtualSize) await callNative(() => base.resize(top.virtualSize));
      await forEachChunk(top.virtualSize, opts, report, async (off, len) => {
        await callNative(() =>
          native.copyRange(top, base, off, len, off, {
            sparseSize: 4096,
            targetZeroed: false,
            layers: baseDepth,
          }),
        );
      });
      await callNative(() => base.flush());
      if (emptyTop) await callNative(() => native.makeEmpty(top));
    } catch (e) {
      failure = e;
    }
    await img.close().catch((e) => (failure ??= e));
    if (failure !== undefined) throw failure;
    return { totalBytes, baseDepth, emptied: emptyTop };
  });
}
