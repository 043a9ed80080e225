/**
 * `bench`: qemu-img's simple I/O benchmark on any image qimg opens — `count` requests of
 * `bufferSize` bytes, `depth` in flight, starting at `offset` and advancing by `stepSize`, wrapping
 * as qemu-img wraps (modulo `size - bufferSize`); writes fill the buffer with `pattern` and may
 * flush every `flushInterval` requests, draining the queue first unless `noDrain`.
 */
import { QimgError } from "../errors.js";
import { open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { QomObject } from "../options/object.js";

/** Options of {@link bench}. */
export interface BenchOptions {
  /** Format (`-f`); probed when absent. */
  format?: string;
  /** Requests to send (default 75000). */
  count?: number;
  /** Requests in flight (default 64). */
  depth?: number;
  /** Offset of the first request (default 0). */
  offset?: number;
  /** Bytes per request (default 4096). */
  bufferSize?: number;
  /** Offset increment (default: the buffer size). */
  stepSize?: number;
  /** Write instead of read. */
  write?: boolean;
  /** Byte written by write tests (default 0). */
  pattern?: number;
  /** Flush after this many requests (write tests; 0 = never). */
  flushInterval?: number;
  /** Flush without first waiting for the requests in flight. */
  noDrain?: boolean;
  /** `-U`: share the image with other users (read tests). */
  forceShare?: boolean;
  /** Secrets for encrypted images. */
  objects?: readonly QomObject[];
}

/** What a bench run measured. */
export interface BenchResult {
  /** Requests completed. */
  requests: number;
  /** Wall-clock seconds from the first request to the last completion (and final flush). */
  seconds: number;
}

/** The offset of the request after one at `offset`, wrapped as qemu-img wraps it. */
export function nextOffset(offset: number, step: number, bufferSize: number, size: number): number {
  const next = offset + step;
  if (size <= bufferSize) return 0;
  return next % (size - bufferSize);
}

/** Run the benchmark on `spec`; rejects on the first failed request (nothing is retried). */
export async function bench(spec: string | ImageOptions, o: BenchOptions = {}): Promise<BenchResult> {
  const count = o.count ?? 75000;
  const depth = o.depth ?? 64;
  const bufferSize = o.bufferSize ?? 4096;
  const step = o.stepSize || bufferSize;
  const write = o.write ?? false;
  const img = await open(spec, {
    format: o.format,
    readOnly: !write,
    forceShare: o.forceShare,
    objects: o.objects,
  });
  try {
    const size = img.virtualSize;
    const bufs = Array.from({ length: Math.min(depth, count) }, () =>
      Buffer.alloc(bufferSize, write ? (o.pattern ?? 0) : 0),
    );
    let offset = o.offset ?? 0;
    let issued = 0;
    let done = 0;
    let failed: unknown;
    const flushEvery = write ? (o.flushInterval ?? 0) : 0;
    const t0 = process.hrtime.bigint();
    // Each lane sends its next request as soon as its previous one completes, so `depth`
    // requests stay in flight; a flush point drains every lane first unless `noDrain`.
    let flushing: Promise<void> | undefined;
    const one = async (buf: Buffer, at: number) => {
      if (at + bufferSize > size) {
        throw new QimgError("ERR_QIMG_IO", "Failed request: Input/output error", { offset: at });
      }
      if (write) await img.write(at, buf);
      else await img.readInto(at, buf);
    };
    const lane = async (buf: Buffer) => {
      for (;;) {
        while (flushing && !o.noDrain) await flushing;
        if (failed !== undefined || issued >= count) return;
        const at = offset;
        offset = nextOffset(offset, step, bufferSize, size);
        issued++;
        try {
          await one(buf, at);
        } catch (e) {
          failed ??= e;
          return;
        }
        done++;
        if (flushEvery > 0 && done % flushEvery === 0 && !flushing) {
          flushing = (async () => {
            if (!o.noDrain)
              while (done < issued && failed === undefined) await new Promise((r) => setImmediate(r));
            await img.flush();
          })().finally(() => {
            flushing = undefined;
          });
          if (!o.noDrain) await flushing;
        }
      }
    };
    await Promise.all(bufs.map(lane));
    if (flushing) await flushing;
    if (failed !== undefined) throw failed;
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return { requests: done, seconds };
  } finally {
    await img.close();
  }
}
