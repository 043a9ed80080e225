/**
 * The Node API of qimg's userspace NVMe driver (issue #9): open a controller bound to vfio-pci by
 * its PCI address, identify it, and do block-aligned async I/O on its namespaces. Errors are
 * `QimgError`s; a failed NVMe command carries `nvmeStatusCodeType` and `nvmeStatusCode`.
 *
 * ```ts
 * const c = await NvmeController.open("0000:00:10.0");
 * console.log(c.identify().model);
 * const ns = await c.namespace(1);
 * await ns.write(0, buf); await ns.flush();
 * await c.close();
 * ```
 */
import type * as Binding from "../../native/binding.js";
import { QimgError } from "../errors.js";
import {
  callNative,
  type NvmeBenchOptions,
  type NvmeBenchResult,
  type NvmeIdentify,
  type NvmeStats,
  native,
  unwrapNativeError,
} from "../native.js";

export type { NvmeBenchOptions, NvmeBenchResult, NvmeIdentify, NvmeStats };

/** One namespace: offsets and lengths are multiples of {@link NvmeNamespace.blockSize}. */
export class NvmeNamespace {
  readonly #n: Binding.NvmeNamespace;

  /** @internal */
  constructor(n: Binding.NvmeNamespace) {
    this.#n = n;
  }

  /** Namespace ID. */
  get nsid(): number {
    return this.#n.nsid;
  }
  /** Size in bytes. */
  get size(): number {
    return this.#n.size;
  }
  /** Logical block size in bytes. */
  get blockSize(): number {
    return this.#n.blockSize;
  }
  /** Blocks in use (NUSE) as identified when the namespace was opened. */
  get blocksInUse(): number {
    return this.#n.blocksInUse;
  }

  /** Read `length` bytes at `offset` into a new Buffer (or into `into`). */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(length);
    if (buf.length < length) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "buffer is shorter than the length to read");
    }
    const view = buf.subarray(0, length);
    await this.#io(false, offset, view, () => this.#n.read(offset, view));
    return view;
  }
  /**
   * Read `buffer.length` bytes at `offset` into `buffer` synchronously, on the calling thread: the
   * command is submitted and its completion awaited here, with no thread-pool hop — the lowest
   * latency at queue depth 1, but the event loop is blocked meanwhile (as with `fs.readSync`).
   */
  readSync(offset: number, buffer: Buffer): void {
    try {
      this.#n.readSync(offset, buffer);
    } catch (e) {
      throw unwrapNativeError(e);
    }
  }
  /** Write `data` at `offset` synchronously, on the calling thread (see {@link readSync}). */
  writeSync(offset: number, data: Uint8Array): void {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    try {
      this.#n.writeSync(offset, buf);
    } catch (e) {
      throw unwrapNativeError(e);
    }
  }
  /**
   * qemu-img bench's loop run natively on one queue (no JavaScript or thread hop per request);
   * `null` when the parameters need the generic path (unaligned sizes or offsets, requests over
   * 64 MiB, a first request beyond the end). `depth` is capped at one queue's command slots (a
   * request larger than MDTS takes several); the result says how many were kept in flight.
   */
  async bench(o: NvmeBenchOptions): Promise<NvmeBenchResult | null> {
    return callNative(() => this.#n.bench(o));
  }
  /** Write `data` at `offset`. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.#io(true, offset, buf, () => this.#n.write(offset, buf));
  }

  /**
   * Every request is submitted from this thread on a free queue (the device starts on it at
   * once) and its completion polled here briefly (`QIMG_NVME_SPIN_US`, 200 µs by default): one
   * that completes within that time needs no thread-pool hop, even with other requests in flight
   * (measured in the TCG guest: about twice the rate of 4 KiB reads from 8 or 32 concurrent
   * `read` calls, and faster 1 MiB sequential reads from 4, than polling only lone requests). The
   * rest is awaited off the thread; with no free queue, the thread pool runs the request.
   */
  async #io(write: boolean, offset: number, buf: Buffer, slow: () => Promise<void>): Promise<void> {
    let token: number;
    try {
      token = this.#n.startIo(write, offset, buf, true);
    } catch (e) {
      throw unwrapNativeError(e);
    }
    if (token === 0) return;
    if (token > 0) {
      await callNative(() => this.#n.finishIo(token));
      return;
    }
    await callNative(slow);
  }
  /**
   * Read several ranges with all their commands in flight at once (one native call for a whole
   * queue depth). Each `buffer` is filled with `buffer.length` bytes from its `offset`.
   */
  async readMany(reqs: { offset: number; buffer: Buffer }[]): Promise<void> {
    await callNative(() =>
      this.#n.readBatch(
        reqs.map((r) => r.offset),
        reqs.map((r) => r.buffer),
      ),
    );
  }
  /** Write several ranges with all their commands in flight at once. */
  async writeMany(reqs: { offset: number; data: Uint8Array }[]): Promise<void> {
    const bufs = reqs.map((r) =>
      Buffer.isBuffer(r.data) ? r.data : Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength),
    );
    await callNative(() =>
      this.#n.writeBatch(
        reqs.map((r) => r.offset),
        bufs,
      ),
    );
  }
  /** Flush the volatile write cache (NVMe Flush). */
  async flush(): Promise<void> {
    await callNative(() => this.#n.flush());
  }
  /** NVMe Write Zeroes; `deallocate` lets the controller unmap the blocks (DEAC). */
  async writeZeroes(offset: number, length: number, opts: { deallocate?: boolean } = {}): Promise<void> {
    await callNative(() => this.#n.writeZeroes(offset, length, opts.deallocate ?? false));
  }
  /** NVMe Dataset Management (deallocate): the blocks may read back as anything. */
  async discard(offset: number, length: number): Promise<void> {
    await callNative(() => this.#n.discard(offset, length));
  }
}

/** An NVMe controller driven from userspace through vfio-pci. */
export class NvmeController {
  readonly #c: Binding.NvmeController;

  private constructor(c: Binding.NvmeController) {
    this.#c = c;
  }

  /** Open the controller at PCI address `bdf` (`DDDD:BB:SS.F`, bound to vfio-pci). */
  static async open(bdf: string): Promise<NvmeController> {
    return new NvmeController(await callNative(() => native.NvmeController.open(bdf)));
  }

  /** Identify Controller fields (serial, model, firmware, MDTS, queue count …). */
  identify(): NvmeIdentify {
    return this.#c.identify();
  }
  /**
   * A Buffer over DMA-mapped memory (at most 64 MiB): reads into it and writes from it (or from
   * any slice of it) move data without the driver's bounce-buffer copy. Valid after `close()`.
   */
  allocBuffer(size: number): Buffer {
    try {
      return this.#c.allocBuffer(size);
    } catch (e) {
      throw unwrapNativeError(e);
    }
  }
  /** Read/write commands that moved data directly (DMA buffers) or through bounce buffers. */
  stats(): NvmeStats {
    return this.#c.stats();
  }
  /** Active namespace IDs. */
  async namespaces(): Promise<number[]> {
    return callNative(() => this.#c.namespaces());
  }
  /** Open namespace `nsid`. */
  async namespace(nsid: number): Promise<NvmeNamespace> {
    return new NvmeNamespace(await callNative(() => this.#c.namespace(nsid)));
  }
  /** Delete the I/O queues and shut the controller down (CC.SHN). */
  async close(): Promise<void> {
    await callNative(() => this.#c.close());
  }
}
