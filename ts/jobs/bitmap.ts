/**
 * `bitmap()`: qemu-img bitmap's actions on an image's persistent dirty bitmaps, applied in order,
 * and `copyBitmaps()`, the persistent-bitmap half of `convert --bitmaps`.
 */
import { QimgError, type QimgErrorCode } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { BitmapAction, BitmapData, Image } from "../image.js";

/** One `qemu-img bitmap` action. */
export type BitmapStep =
  | { op: "add" | "remove" | "clear" | "enable" | "disable" }
  | {
      /** Merge the bitmap `source` (of `sourceFile`, or of this image) into the target bitmap. */
      op: "merge";
      source: string;
    };

/** Options of {@link bitmap}. */
export interface BitmapOptions extends Pick<OpenOptions, "format" | "locking"> {
  /** `-g`: bytes per bit of a bitmap `--add` creates (default: the cluster size, 4–64 KiB). */
  granularity?: number;
  /** `-b`: the image merge sources are read from (default: the image itself). */
  sourceFile?: string | ImageOptions;
  /** `-F`: format of `sourceFile`. */
  sourceFormat?: string;
}

function failed(op: string, name: string, e: unknown): QimgError {
  const code: QimgErrorCode = e instanceof QimgError ? e.code : "ERR_QIMG_INTERNAL";
  const msg = e instanceof Error ? e.message : String(e);
  return new QimgError(code, `Operation ${op} on bitmap ${name} failed: ${msg}`, { cause: e });
}

/**
 * Apply `steps` to bitmap `name` of the image, in order. Steps before a failing one stay
 * applied; the error reads as qemu-img's (`Operation add on bitmap b failed: …`).
 */
export async function bitmap(
  spec: string | ImageOptions,
  name: string,
  steps: BitmapStep[],
  opts: BitmapOptions = {},
): Promise<void> {
  const img = await open(spec, { format: opts.format, locking: opts.locking, noBacking: true });
  let src: Image | undefined;
  try {
    for (const s of steps) {
      let action: BitmapAction;
      try {
        if (s.op === "merge") {
          if (opts.sourceFile !== undefined && !src) {
            src = await open(opts.sourceFile, { format: opts.sourceFormat, readOnly: true, noBacking: true });
          }
          const from = src ?? img;
          action = { op: "merge", name, source: await from.bitmapRead(s.source) };
        } else if (s.op === "add" && opts.granularity) {
          action = { op: "add", name, granularity: opts.granularity };
        } else action = { op: s.op, name };
        await img.bitmapApply([action]);
      } catch (e) {
        throw failed(s.op, name, e);
      }
    }
  } finally {
    await src?.close().catch(() => undefined);
    await img.close();
  }
}

/**
 * Copy every persistent bitmap of `src` into `dst` (both open; `dst` writable qcow2 v3):
 * name, granularity, bits and enabled state. Inconsistent bitmaps fail the copy unless
 * `skipBroken`; the names skipped are returned.
 */
export async function copyBitmaps(src: Image, dst: Image, skipBroken: boolean): Promise<string[]> {
  const list = await src.bitmaps();
  const skipped: string[] = [];
  const actions: BitmapAction[] = [];
  for (const b of list) {
    if (b.inUse) {
      if (!skipBroken) {
        throw new QimgError(
          "ERR_QIMG_INVALID_ARGUMENT",
          `Cannot copy inconsistent bitmap '${b.name}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`,
        );
      }
      skipped.push(b.name);
      continue;
    }
    const data: BitmapData = await src.bitmapRead(b.name);
    actions.push({ op: "add", name: b.name, granularity: b.granularity });
    actions.push({ op: "merge", name: b.name, source: data });
    if (!b.auto) actions.push({ op: "disable", name: b.name });
  }
  if (actions.length > 0) await dst.bitmapApply(actions);
  return skipped;
}

/** The inconsistent bitmaps of `src` (convert checks them before creating the target). */
export async function brokenBitmaps(src: Image): Promise<string[]> {
  return (await src.bitmaps()).filter((b) => b.inUse).map((b) => b.name);
}
