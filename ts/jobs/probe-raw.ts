/**
 * The format of an image given without `-f`, for commands that write to it but (like qemu-img
 * resize and amend) go on with a warning when probing guesses raw.
 */
import { probeFile } from "../graph/probe.js";
import type { ImageOptions } from "../graph/spec.js";

/** qemu-img's warning when probing guessed raw for `filename` (without the `WARNING: ` prefix). */
export function rawGuessWarning(filename: string): string {
  return (
    `Image format was not specified for '${filename}' and probing guessed raw.\n` +
    "         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n" +
    "         Specify the 'raw' format explicitly to remove the restrictions."
  );
}

/** `format` if given; else the probed format of a plain filename (warning if it is raw). */
export async function formatOrProbe(
  spec: string | ImageOptions,
  format: string | undefined,
  onWarning?: (message: string) => void,
): Promise<string | undefined> {
  if (format !== undefined || typeof spec !== "string" || spec.startsWith("json:")) return format;
  const probed = await probeFile(spec);
  if (probed === "raw") onWarning?.(rawGuessWarning(spec));
  return probed;
}
