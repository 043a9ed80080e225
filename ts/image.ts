/**
 * `Image`: an opened image (its whole backing chain) with async I/O. Close it explicitly with
 * `close()` or `await using` — closing flushes and releases the image locks; nothing relies on GC.
 */
import { QimgError } from "./errors.js";
import { type ImageInfo, nodeInfo } from "./jobs/node-info.js";
import {
  type NativeBitmapAction as BitmapAction,
  type NativeBitmapData as BitmapData,
  type NativeBitmap as BitmapInfo,
  callNative,
  type MapEntry,
  type NativeImage,
  type NativeSnapshot,
  native,
} from "./native.js";

export type { BitmapAction, BitmapData, BitmapInfo };

/** An internal snapshot (qcow2), with qemu-img's `SnapshotInfo` fields. */
export interface SnapshotInfo {
  /** Unique ID string (qemu-img numbers them 1, 2, …). */
  id: string;
  /** Name (tag); names may repeat and may be empty. */
  name: string;
  /** Bytes of saved VM state (0 for disk-only snapshots). */
  vmStateSize: number;
  /** Creation time: seconds since the epoch. */
  dateSec: number;
  /** Creation time: nanoseconds within the second. */
  dateNsec: number;
  /** Guest clock at creation, in nanoseconds. */
  vmClockNsec: number;
  /** Instruction count at creation, when recorded. */
  icount?: number;
  /** Guest size when the snapshot was taken. */
  diskSize: number;
}

/**
 * Which snapshot: a string is an ID, else a name (as `qemu-img snapshot -a` and `convert -l NAME`);
 * an object matches `id` and/or `name` exactly (`snapshot.id=…,snapshot.name=…`).
 */
export type SnapshotSelector = string | { id?: string; name?: string };

function toSnapshotInfo(n: NativeSnapshot): SnapshotInfo {
  const s: SnapshotInfo = {
    id: n.id,
    name: n.name,
    vmStateSize: n.vmStateSize,
    dateSec: n.dateSec,
    dateNsec: n.dateNsec,
    vmClockNsec: n.vmClockNsec,
    diskSize: n.diskSize,
  };
  if (n.icount !== undefined && n.icount !== null) s.icount = n.icount;
  return s;
}

function toNativeRef(sel: SnapshotSelector): { idOrName?: string; id?: string; name?: string } {
  if (typeof sel === "string") return { idOrName: sel };
  if (sel.id === undefined && sel.name === undefined)
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "a snapshot selector needs an id or a name");
  return { id: sel.id, name: sel.name };
}

/** One extent of block status, as `qemu-img map --output=json` reports it. */
export interface BlockStatusEntry {
  /** Guest offset. */
  start: number;
  /** Length in bytes. */
  length: number;
  /** Chain depth that decided this range (0 = this image). */
  depth: number;
  /** Allocated in some layer. */
  present: boolean;
  /** Reads as zeros. */
  zero: boolean;
  /** Holds data. */
  data: boolean;
  /** Stored compressed. */
  compressed: boolean;
  /** Host offset in the deciding layer's file, when meaningful. */
  offset?: number;
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** An opened image and its backing chain. */
export class Image implements AsyncDisposable {
  /** @internal The native handles, top first. */
  readonly chain: NativeImage[];
  /** Host file name of the top image. */
  readonly filename: string;
  /** Format of the top image. */
  readonly format: string;
  /** True if opened read-only. */
  readonly readOnly: boolean;
  /** File names of the chain, top first. */
  readonly chainFilenames: string[];
  #closed = false;
  /** External data files the layers use (closed after them). */
  readonly #attached: NativeImage[];

  /** @internal Use `open()`. */
  constructor(chain: NativeImage[], filenames: string[], readOnly: boolean, attached: NativeImage[] = []) {
    this.#attached = attached;
    this.chain = chain;
    this.chainFilenames = filenames;
    this.filename = filenames[0];
    this.format = chain[0].format;
    this.readOnly = readOnly;
  }

  /** @internal The top native handle. */
  get native(): NativeImage {
    if (this.#closed)
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "the image is closed", { path: this.filename });
    return this.chain[0];
  }

  /** Guest size in bytes. */
  get virtualSize(): number {
    return this.native.virtualSize;
  }

  #range(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `invalid range ${offset}+${length}`, {
        path: this.filename,
      });
    }
    if (offset + length > this.virtualSize) {
      throw new QimgError(
        "ERR_QIMG_OUT_OF_RANGE",
        `range ${offset}+${length} is beyond the end of the image (${this.virtualSize} bytes)`,
        { path: this.filename, offset },
      );
    }
  }

  /** Read `length` guest bytes at `offset`. */
  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(offset, buf);
    return buf;
  }

  /** Read `buf.length` guest bytes at `offset` into `buf`. */
  async readInto(offset: number, buf: Uint8Array): Promise<void> {
    this.#range(offset, buf.byteLength);
    await callNative(() => this.native.read(offset, toBuffer(buf)));
  }

  /**
   * Write `data` at guest `offset`. With `fua` ("force unit access") the data is durable when
   * the promise resolves: over NBD the write carries `NBD_CMD_FLAG_FUA` (or is followed by a
   * flush when the server has no FUA); elsewhere it is followed by a flush of the image.
   */
  async write(offset: number, data: Uint8Array, opts: { fua?: boolean } = {}): Promise<void> {
    this.#range(offset, data.byteLength);
    await callNative(() => this.native.write(offset, toBuffer(data), opts.fua === true));
  }

  /**
   * Write one whole cluster compressed (qcow2): `offset` is cluster aligned and `data` is one
   * cluster long (shorter only for the image's last cluster). Data that does not compress is
   * stored plainly. `level`: zlib 1..9, zstd 1..22 (default the format's).
   */
  async writeCompressed(offset: number, data: Uint8Array, opts: { level?: number } = {}): Promise<void> {
    this.#range(offset, data.byteLength);
    await callNative(() => this.native.writeCompressed(offset, toBuffer(data), opts.level));
  }

  /** Make a guest range read as zeros; `mayUnmap` lets the format free the space. */
  async writeZeroes(offset: number, length: number, opts: { mayUnmap?: boolean } = {}): Promise<void> {
    this.#range(offset, length);
    await callNative(() => this.native.writeZeroes(offset, length, opts.mayUnmap ?? false));
  }

  /** Discard a guest range. */
  async discard(offset: number, length: number): Promise<void> {
    this.#range(offset, length);
    await callNative(() => this.native.discard(offset, length));
  }

  /** Block status of `[offset, offset+length)` through the backing chain, like `qemu-img map`. */
  async blockStatus(offset = 0, length = this.virtualSize - offset): Promise<BlockStatusEntry[]> {
    this.#range(offset, length);
    const out: BlockStatusEntry[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const part: MapEntry[] = await callNative(() => this.native.blockStatus(pos, end - pos));
      if (part.length === 0) break;
      for (const e of part) {
        const entry: BlockStatusEntry = {
          start: e.start,
          length: Math.min(e.length, end - e.start),
          depth: e.depth,
          present: e.present,
          zero: e.zero,
          data: e.data,
          compressed: e.compressed,
        };
        if (e.offset !== undefined && e.offset !== null) entry.offset = e.offset;
        out.push(entry);
        pos = e.start + entry.length;
      }
    }
    return out;
  }

  /** `qemu-img info --output=json` of this image (the top layer). */
  async info(): Promise<ImageInfo> {
    return nodeInfo(this.native, this.filename);
  }

  /** The image's persistent dirty bitmaps (qcow2), in directory order. */
  async bitmaps(): Promise<BitmapInfo[]> {
    return callNative(() => this.native.bitmaps());
  }

  /**
   * Apply `qemu-img bitmap` actions in order and store the bitmaps durably. Actions before a
   * failing one stay applied, as with qemu-img.
   */
  async bitmapApply(actions: BitmapAction[]): Promise<void> {
    await callNative(() => this.native.bitmapApply(actions));
  }

  /** The bits of persistent bitmap `name` (refused for inconsistent, in-use bitmaps). */
  async bitmapRead(name: string): Promise<BitmapData> {
    return callNative(() => this.native.bitmapRead(name));
  }

  /** Flush data then metadata to stable storage. */
  async flush(): Promise<void> {
    await callNative(() => this.native.flush());
  }

  /**
   * Change the virtual size (active layer). Growing preallocates the new area with
   * `preallocation` (`off` by default; qcow2 takes metadata/falloc/full, raw falloc/full);
   * shrinking drops the data past the new end (qcow2 frees its clusters and truncates the file).
   */
  async resize(
    size: number,
    opts: { preallocation?: "off" | "metadata" | "falloc" | "full" } = {},
  ): Promise<void> {
    await callNative(() => this.native.truncate(size, opts.preallocation ?? "off"));
  }

  /** The image's internal snapshots (qcow2; empty for formats without them), oldest first. */
  async snapshots(): Promise<SnapshotInfo[]> {
    return (await callNative(() => this.native.snapshots())).map(toSnapshotInfo);
  }

  /**
   * Take an internal snapshot of this image (opened writable) named `name`; a new ID is chosen
   * as qemu-img does. Resolves after the snapshot is on stable storage.
   */
  async snapshotCreate(name: string): Promise<SnapshotInfo> {
    return toSnapshotInfo(await callNative(() => this.native.snapshotCreate(name)));
  }

  /** Revert this image (opened writable) to a snapshot; its virtual size becomes the snapshot's. */
  async snapshotApply(which: SnapshotSelector): Promise<void> {
    await callNative(() => this.native.snapshotApply(toNativeRef(which)));
  }

  /** Delete a snapshot of this image (opened writable), freeing what only it used. */
  async snapshotDelete(which: SnapshotSelector): Promise<void> {
    await callNative(() => this.native.snapshotDelete(toNativeRef(which)));
  }

  /**
   * A read-only `Image` showing a snapshot's contents (it reads through this image's backing
   * chain). Close it before closing this image.
   */
  async snapshotView(which: SnapshotSelector): Promise<Image> {
    const v = await callNative(() => this.native.snapshotView(toNativeRef(which)));
    return new Image([v], [this.filename], true);
  }

  /** Close the whole chain: flush, clear dirty marks, release locks. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let first: unknown;
    // Layers first (they flush into their data files), then the data files.
    for (const n of [...this.chain, ...this.#attached]) {
      try {
        await callNative(() => n.close());
      } catch (e) {
        first ??= e;
      }
    }
    if (first) throw first;
  }

  /** `await using img = await open(...)` closes the image at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** @internal Access to the addon for jobs. */
export const nativeJobs = native;
