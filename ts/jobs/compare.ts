/** `compare()`: are two images' guest contents equal? (qemu-img compare semantics) */
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { callNative, native } from "../native.js";
import { Job, throwIfAborted } from "./job.js";

/** Options of {@link compare}. */
export interface CompareOptions extends Pick<OpenOptions, "forceShare" | "locking"> {
  /** Format of the first image (`-f`). */
  formatA?: string;
  /** Format of the second image (`-F`). */
  formatB?: string;
  /** `-s`: sizes must match too. */
  strict?: boolean;
  /** Cancellation. */
  signal?: AbortSignal;
}

/** The outcome of a comparison. */
export interface CompareResult {
  /** True if equal. */
  identical: boolean;
  /** First differing guest offset. */
  mismatchOffset?: number;
  /** Strict mode only: the sizes differ. */
  sizeMismatch?: boolean;
}

const CHUNK = 64 << 20;

/** Compare two images. Without `strict`, a size difference is allowed if the extra tail reads as zeros. */
export function compare(
  a: string | ImageOptions,
  b: string | ImageOptions,
  opts: CompareOptions = {},
): Job<CompareResult> {
  return new Job(async (report) => {
    const ia = await open(a, {
      format: opts.formatA,
      readOnly: true,
      forceShare: opts.forceShare,
      locking: opts.locking,
      signal: opts.signal,
    });
    try {
      const ib = await open(b, {
        format: opts.formatB,
        readOnly: true,
        forceShare: opts.forceShare,
        locking: opts.locking,
        signal: opts.signal,
      });
      try {
        const sa = ia.virtualSize;
        const sb = ib.virtualSize;
        if (opts.strict && sa !== sb) return { identical: false, sizeMismatch: true };
        const common = Math.min(sa, sb);
        const total = Math.max(sa, sb);
        for (let off = 0; off < common; off += CHUNK) {
          throwIfAborted(opts.signal);
          const len = Math.min(CHUNK, common - off);
          const m = await callNative(() => native.compareRange(ia.native, ib.native, off, len));
          if (m !== null) return { identical: false, mismatchOffset: m };
          report({ done: off + len, total });
        }
        const longer = sa > sb ? ia : ib;
        for (let off = common; off < total; off += CHUNK) {
          throwIfAborted(opts.signal);
          const len = Math.min(CHUNK, total - off);
          const m = await callNative(() => native.firstNonzeroOffset(longer.native, off, len));
          if (m !== null) return { identical: false, mismatchOffset: m };
          report({ done: off + len, total });
        }
        return { identical: true };
      } finally {
        await ib.close();
      }
    } finally {
      await ia.close();
    }
  });
}
