/**
 * `rebase()`: point an image at another backing file, as `qemu-img rebase` does. In safe mode
 * (the default) every range the image does not allocate itself is read through the old chain and
 * through the new backing file, and where they differ the old contents are copied into the image
 * first, so the guest sees the same disk afterwards. `unsafe` (`-u`) only rewrites the reference.
 */

import { dirname, isAbsolute, resolve } from "node:path";
import { QimgError } from "../errors.js";
import { open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { Image } from "../image.js";
import { callNative, native } from "../native.js";
import type { QomObject } from "../options/object.js";
import { forEachChunk } from "./chunks.js";
import { Job } from "./job.js";

/** Options of {@link rebase}. */
export interface RebaseOptions {
  /** Format of the image (`-f`); probed when absent. */
  format?: string;
  /** `-b`: the new backing file as it will be stored ("" = none: the image becomes standalone). */
  backingFile: string;
  /** `-F`: format of the new backing file (required with a backing file, as qemu-img 10). */
  backingFormat?: string;
  /** `-u`: only change the reference; the new backing file need not exist. */
  unsafe?: boolean;
  /** `-c`: write copied clusters compressed. */
  compress?: boolean;
  /** `-U`: open the backing files with force-share. */
  forceShare?: boolean;
  /** `-t`: cache mode of the image (and its current chain). */
  cache?: string;
  /** `-T`: cache mode of the new backing file. */
  sourceCache?: string;
  /** Cancellation between chunks. */
  signal?: AbortSignal;
  /** Secret objects for encrypted layers (default: the CLI's `--object`s, as for `open`). */
  objects?: readonly QomObject[];
}

/** What a finished rebase did. */
export interface RebaseResult {
  /** Bytes compared between the old and the new backing. */
  bytesCompared: number;
  /** Bytes copied into the image. */
  bytesWritten: number;
}

/** The new backing file as opened: relative names are relative to the image's directory. */
function backingPath(backing: string, image: string): string {
  if (isAbsolute(backing) || /^[a-z0-9+.-]+:/i.test(backing)) return backing;
  return resolve(dirname(image), backing);
}

/** Change the backing file of `image` to `opts.backingFile`. */
export function rebase(image: string | ImageOptions, opts: RebaseOptions): Job<RebaseResult> {
  return new Job(async (report) => {
    const name = typeof image === "string" ? image : String(image.filename ?? "");
    const backing = opts.backingFile;
    const result: RebaseResult = { bytesCompared: 0, bytesWritten: 0 };
    const needFormat = () => {
      if (backing !== "" && opts.backingFormat === undefined) {
        throw new QimgError(
          "ERR_QIMG_INVALID_ARGUMENT",
          `Could not change the backing file to '${backing}': backing format must be specified`,
          { path: name },
        );
      }
    };
    const img = await open(image, {
      format: opts.format,
      readOnly: false,
      noBacking: opts.unsafe,
      cache: opts.cache,
      signal: opts.signal,
      objects: opts.objects,
    });
    let newBase: Image | undefined;
    let failure: unknown;
    try {
      if (!opts.unsafe) {
        if (backing !== "") {
          try {
            newBase = await open(backingPath(backing, img.filename), {
              format: opts.backingFormat,
              readOnly: true,
              forceShare: opts.forceShare,
              cache: opts.sourceCache,
              signal: opts.signal,
              objects: opts.objects,
            });
          } catch (e) {
            const msg = e instanceof Error ? e.message : String(e);
            throw new QimgError(
              "ERR_QIMG_INVALID_ARGUMENT",
              `Could not open new backing file '${backing}': ${msg}`,
              {
                path: backing,
                cause: e,
              },
            );
          }
        }
        needFormat();
        const top = img.native;
        const nb = newBase?.native ?? null;
        const granule = (await callNative(() => top.info())).clusterSize ?? 65536;
        await forEachChunk(top.virtualSize, opts, report, async (off, len) => {
          const st = await callNative(() =>
            native.rebaseRange(top, nb, off, len, { granule, compress: !!opts.compress }),
          );
          result.bytesCompared += st.bytesCompared;
          result.bytesWritten += st.bytesWritten;
        });
      } else {
        needFormat();
      }
      const fmt = backing === "" ? null : (opts.backingFormat ?? null);
      await callNative(() => native.setBackingFile(img.native, backing === "" ? null : backing, fmt));
    } catch (e) {
      failure = e;
    }
    if (newBase) await newBase.close().catch(() => undefined);
    await img.close().catch((e) => (failure ??= e));
    if (failure !== undefined) throw failure;
    return result;
  });
}
