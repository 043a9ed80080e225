/** `qimg resize`: qemu-img's "Image resized." and its warnings. */
import type { ImageOptions } from "../graph/spec.js";
import { resize } from "../jobs/resize.js";
import type { Io } from "./output.js";

/** What the `resize` command needs. */
export interface ResizeArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** The size argument, without its sign. */
  size: bigint;
  /** `+` / `-` for a relative size. */
  relative?: "+" | "-";
  /** `--preallocation`. */
  preallocation: "off" | "metadata" | "falloc" | "full";
  /** `--shrink`. */
  shrink: boolean;
  /** `-q`. */
  quiet: boolean;
}

/** Run `resize`; returns the exit code. */
export async function resizeCommand(a: ResizeArgs, io: Io): Promise<number> {
  const warnings: string[] = [];
  try {
    await resize(a.image, a.size, {
      format: a.format,
      preallocation: a.preallocation,
      shrink: a.shrink,
      relative: a.relative,
      onWarning: (m) => (m.startsWith("Image format") ? io.err(`WARNING: ${m}\n`) : warnings.push(m)),
    });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    io.err(`qimg: ${msg}\n`);
    for (const w of warnings) io.err(`qimg: warning: ${w}\n`);
    return 1;
  }
  if (!a.quiet) io.out("Image resized.\n");
  return 0;
}
