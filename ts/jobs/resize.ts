/** `resize()`: change an image's virtual size as `qemu-img resize` does (shrink needs `shrink`). */
import { QimgError } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { formatOrProbe } from "./probe-raw.js";

/** Options of {@link resize}. */
export interface ResizeOptions extends Pick<OpenOptions, "format" | "locking"> {
  /** Preallocation of the grown area (`off` by default; raw takes off/falloc/full). */
  preallocation?: "off" | "metadata" | "falloc" | "full";
  /** Allow making the image smaller (data past the new end is lost). */
  shrink?: boolean;
  /** Interpret `size` as a change of the current size (`+`) or (`-`). */
  relative?: "+" | "-";
  /** Called with qemu-img's warnings (probing guessed raw, shrinking without `shrink`). */
  onWarning?: (message: string) => void;
}

const INT64_MAX = 0x7fff_ffff_ffff_ffffn;

/** Resize `spec` to `size` bytes (or by `size` with `relative`); returns the new size. */
export async function resize(
  spec: string | ImageOptions,
  size: number | bigint,
  opts: ResizeOptions = {},
): Promise<number> {
  const format = await formatOrProbe(spec, opts.format, opts.onWarning);
  const img = await open(spec, { format, locking: opts.locking, noBacking: true });
  try {
    const current = BigInt(img.virtualSize);
    const n = BigInt(size);
    let total = opts.relative === "+" ? current + n : opts.relative === "-" ? current - n : n;
    if (total > INT64_MAX) total -= 1n << 64n; // qemu-img's int64 arithmetic
    if (total <= 0n) throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "New image size must be positive");
    const prealloc = opts.preallocation ?? "off";
    if (total < current && !opts.shrink) {
      opts.onWarning?.(
        "Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.",
      );
      throw new QimgError(
        "ERR_QIMG_INVALID_ARGUMENT",
        "Use the --shrink option to perform a shrink operation.",
      );
    }
    if (total <= current && prealloc !== "off")
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Preallocation can only be used for growing images");
    if (img.format === "qcow2" && total % 512n !== 0n)
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "The new size must be a multiple of 512");
    if (img.format === "qcow2" && total > current) {
      // QEMU's L1 limit (32 MiB of entries), checked before qimg's own 2^53 limit.
      const cs = BigInt((await img.info())["cluster-size"] ?? 65536);
      const entries = (total + cs * (cs / 8n) - 1n) / (cs * (cs / 8n));
      if (entries * 8n > 32n << 20n)
        throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Failed to grow the L1 table: File too large");
    }
    if (total > BigInt(Number.MAX_SAFE_INTEGER))
      throw new QimgError("ERR_QIMG_OUT_OF_RANGE", `Size ${total} is beyond what qimg can address`);
    await img.resize(Number(total), { preallocation: prealloc });
    return Number(total);
  } finally {
    await img.close();
  }
}
