/** `qimg bitmap`: qemu-img bitmap's actions (no output; exit 0, or 1 with qemu-img's message). */
import type { ImageOptions } from "../graph/spec.js";
import { type BitmapStep, bitmap } from "../jobs/bitmap.js";
import type { Io } from "./output.js";

/** What the `bitmap` command needs. */
export interface BitmapArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** The bitmap acted on. */
  bitmap: string;
  /** Actions in command-line order. */
  steps: BitmapStep[];
  /** `-g`. */
  granularity?: number;
  /** `-b`. */
  sourceFile?: string;
  /** `-F`. */
  sourceFormat?: string;
}

/** Run `bitmap`; returns the exit code (errors throw and exit 1). */
export async function bitmapCommand(a: BitmapArgs, _io: Io): Promise<number> {
  await bitmap(a.image, a.bitmap, a.steps, {
    format: a.format,
    granularity: a.granularity,
    sourceFile: a.sourceFile,
    sourceFormat: a.sourceFormat,
  });
  return 0;
}
