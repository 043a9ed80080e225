/**
 * The chunk scheduler of whole-image jobs (`commit`, `rebase`): the guest range is cut into
 * chunks, up to `parallel` native calls are in flight, progress is reported per finished chunk,
 * an `AbortSignal` stops between chunks, and an optional rate limit (bytes per second, `-r`)
 * paces the starts.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type Progress, throwIfAborted } from "./job.js";

/** How {@link forEachChunk} schedules. */
export interface ChunkOptions {
  /** Bytes per chunk (default 4 MiB). */
  chunkSize?: number;
  /** Chunks in flight (default 8). */
  parallel?: number;
  /** Cancellation, checked before each chunk. */
  signal?: AbortSignal;
  /** Bytes per second, at most (`-r`); unlimited when absent or 0. */
  rateLimit?: number;
}

/** Run `fn(offset, length)` over `[0, total)` in chunks, reporting progress. */
export async function forEachChunk(
  total: number,
  opts: ChunkOptions,
  report: (p: Progress) => void,
  fn: (offset: number, length: number) => Promise<void>,
): Promise<void> {
  const chunk = opts.chunkSize ?? 4 << 20;
  const parallel = opts.parallel ?? 8;
  const started = Date.now();
  let next = 0;
  let done = 0;
  report({ done, total });
  const worker = async () => {
    while (next < total) {
      throwIfAborted(opts.signal);
      const off = next;
      const len = Math.min(chunk, total - off);
      next += len;
      if (opts.rateLimit) {
        // Start this chunk no earlier than the rate allows for the bytes before it.
        const due = started + (off / opts.rateLimit) * 1000;
        if (due > Date.now()) await sleep(due - Date.now());
      }
      await fn(off, len);
      done += len;
      report({ done, total });
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, parallel) }, worker));
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}
