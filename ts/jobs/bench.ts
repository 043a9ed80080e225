/**
 * `bench`: qemu-img's simple I/O benchmark on any image qimg opens — `count` requests of
 * `bufferSize` bytes, `depth` in flight, starting at `offset` and advancing by `stepSize`, wrapping
 * as qemu-img wraps (modulo `size - bufferSize`); writes fill the buffer with `pattern` and may
 * flush every `flushInterval` requests, draining the queue first unless `noDrain`. A raw image on
 * `nvme://` runs the loop natively on one NVMe queue (as qemu-img runs it in C), see
 * {@link nativeNvmeBench}.
 */
import { QimgError } from "../errors.js";
import type { NvmeTarget } from "../graph/nvme.js";
import { open, toNodeSpec } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { NvmeController } from "../nvme/controller.js";
import type { QomObject } from "../options/object.js";

/** Options of {@link bench}. */
export interface BenchOptions {
  /** Format (`-f`); probed when absent. */
  format?: string;
  /** `-t`: cache mode of the host file (`none`/`directsync`: O_DIRECT), as `open`'s `cache`. */
  cache?: string;
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
  /**
   * Raw images on `nvme://`: run the loop natively on one NVMe queue when the parameters allow
   * (default true); false measures the generic path (one async read/write per request).
   */
  native?: boolean;
}

/** What a bench run measured. */
export interface BenchResult {
  /** Requests completed. */
  requests: number;
  /** Wall-clock seconds from the first request to the last completion (and final flush). */
  seconds: number;
  /** Set when the loop ran natively on an NVMe queue: the requests it kept in flight. */
  nativeDepth?: number;
}

/** The offset of the request after one at `offset`, wrapped as qemu-img wraps it. */
export function nextOffset(offset: number, step: number, bufferSize: number, size: number): number {
  const next = offset + step;
  if (size <= bufferSize) return 0;
  return next % (size - bufferSize);
}

/**
 * The native NVMe loop on namespace `t` (whose raw image, `size` bytes, the caller has closed: a
 * controller opens once at a time); undefined when the parameters need the generic loop
 * (unaligned, requests larger than one command, a raw node smaller than the namespace).
 */
async function nativeNvmeBench(
  t: NvmeTarget,
  size: number,
  o: BenchOptions,
  p: { count: number; depth: number; bufferSize: number; step: number; write: boolean },
): Promise<BenchResult | undefined> {
  const c = await NvmeController.open(t.device);
  try {
    const ns = await c.namespace(t.namespace);
    if (ns.size !== size) return undefined;
    const r = await ns.bench({
      count: p.count,
      depth: p.depth,
      offset: o.offset ?? 0,
      bufferSize: p.bufferSize,
      stepSize: p.step,
      write: p.write,
      pattern: o.pattern ?? 0,
      flushInterval: p.write ? (o.flushInterval ?? 0) : 0,
    });
    return r ? { requests: r.requests, seconds: r.seconds, nativeDepth: r.depth } : undefined;
  } finally {
    await c.close();
  }
}

/** Run the benchmark on `spec`; rejects on the first failed request (nothing is retried). */
export async function bench(spec: string | ImageOptions, o: BenchOptions = {}): Promise<BenchResult> {
  const count = o.count ?? 75000;
  const depth = o.depth ?? 64;
  const bufferSize = o.bufferSize ?? 4096;
  const step = o.stepSize || bufferSize;
  const write = o.write ?? false;
  const openIt = () =>
    open(spec, {
      format: o.format,
      readOnly: !write,
      forceShare: o.forceShare,
      objects: o.objects,
      cache: o.cache,
    });
  let img = await openIt();
  const nvme = toNodeSpec(spec).nvme;
  // A raw image straight on a namespace: qemu-img's loop natively on one NVMe queue.
  if (
    nvme &&
    img.format === "raw" &&
    img.chain.length === 1 &&
    o.native !== false &&
    !(o.noDrain && (o.flushInterval ?? 0) > 0)
  ) {
    const size = img.virtualSize;
    await img.close();
    const r = await nativeNvmeBench(nvme, size, o, { count, depth, bufferSize, step, write });
    if (r) return r;
    img = await openIt();
  }
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
