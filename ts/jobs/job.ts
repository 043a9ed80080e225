/**
 * Long-running jobs: a promise-like object with progress events and cancellation.
 *
 * `await convert(...)` works directly; `job.on("progress", ({ done, total }) => …)` reports bytes;
 * an `AbortSignal` cancels between chunks (chunks are a few MiB, so cancellation lands well within
 * 100 ms) and the job rejects with `ERR_QIMG_ABORTED` after leaving its output consistent.
 */
import { EventEmitter } from "node:events";
import { QimgError } from "../errors.js";

/** Progress of a job in bytes. */
export interface Progress {
  /** Bytes processed so far. */
  done: number;
  /** Bytes to process in all. */
  total: number;
}

/** A running job resolving to `T`. */
export class Job<T> extends EventEmitter implements PromiseLike<T> {
  /** The job's outcome. */
  readonly result: Promise<T>;

  /** @internal Start `run` on the next tick, giving it a progress reporter. */
  constructor(run: (report: (p: Progress) => void) => Promise<T>) {
    super();
    this.result = Promise.resolve().then(() => run((p) => this.emit("progress", p)));
    // Avoid an unhandled rejection when the caller only listens to events.
    this.result.catch(() => undefined);
  }

  // biome-ignore lint/suspicious/noThenProperty: a Job is deliberately awaitable.
  then<A = T, B = never>(
    onfulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.result.then(onfulfilled, onrejected);
  }
}

/** Throw `ERR_QIMG_ABORTED` if `signal` is aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted)
    throw new QimgError("ERR_QIMG_ABORTED", "The operation was aborted", { cause: signal.reason });
}
