/** `qimg amend`: change format options in place; `-o help` lists the amendable ones. */

import { QimgError } from "../errors.js";
import { probeFile } from "../graph/probe.js";
import type { ImageOptions } from "../graph/spec.js";
import { amend, amendHelp } from "../jobs/amend.js";
import type { Io } from "./output.js";

/** What the `amend` command needs. */
export interface AmendArgs {
  /** The image (absent with `-o help` alone). */
  image?: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `-o` options by name. */
  options: Record<string, string>;
  /** `-o help`. */
  help: boolean;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `--force`. */
  force?: boolean;
  /** `-t`. */
  cache?: string;
}

/** Run `amend`; returns the exit code. */
export async function amendCommand(a: AmendArgs, io: Io): Promise<number> {
  if (a.help) {
    let format = a.format;
    if (format === undefined && typeof a.image === "string") format = await probeFile(a.image);
    if (format === undefined)
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Expecting one image file name");
    io.out(amendHelp(format));
    return 0;
  }
  if (a.image === undefined)
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Expecting one image file name");
  const progress = a.progress && !a.quiet;
  if (progress) io.out("    (0.00/100%)\r");
  await amend(a.image, a.options, {
    format: a.format,
    force: a.force === true,
    cache: a.cache,
    onWarning: (m) => io.err(`WARNING: ${m}\n`),
  });
  // qemu-img reports the end twice (the amend callback, then the final update) before the newline.
  if (progress) io.out("    (100.00/100%)\r    (100.00/100%)\r\n");
  return 0;
}
