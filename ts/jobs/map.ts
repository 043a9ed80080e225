/** `map()`: the allocation map of an image through its chain, merged as qemu-img merges it. */
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { BlockStatusEntry } from "../image.js";

/** Options of {@link map}. */
export interface MapOptions extends Pick<OpenOptions, "format" | "forceShare" | "locking"> {
  /** `--start-offset`. */
  startOffset?: number;
  /** `--max-length`. */
  maxLength?: number;
}

/** One map entry, with the file that holds it (for the human output). */
export interface MapResultEntry extends BlockStatusEntry {
  /** File name of the layer at `depth`. */
  filename: string;
}

function mergeable(a: MapResultEntry, b: MapResultEntry): boolean {
  return (
    a.depth === b.depth &&
    a.present === b.present &&
    a.zero === b.zero &&
    a.data === b.data &&
    a.compressed === b.compressed &&
    a.filename === b.filename &&
    a.start + a.length === b.start &&
    ((a.offset === undefined && b.offset === undefined) ||
      (a.offset !== undefined && b.offset !== undefined && a.offset + a.length === b.offset))
  );
}

/** Map `[startOffset, startOffset+maxLength)` of an image. */
export async function map(spec: string | ImageOptions, opts: MapOptions = {}): Promise<MapResultEntry[]> {
  const img = await open(spec, {
    format: opts.format,
    readOnly: true,
    forceShare: opts.forceShare,
    locking: opts.locking,
  });
  try {
    const size = img.virtualSize;
    const start = Math.min(opts.startOffset ?? 0, size);
    const end = Math.min(size, opts.maxLength === undefined ? size : start + opts.maxLength);
    const out: MapResultEntry[] = [];
    if (end <= start) return out;
    for (const e of await img.blockStatus(start, end - start)) {
      const entry: MapResultEntry = { ...e, filename: img.chainFilenames[e.depth] ?? img.filename };
      const last = out[out.length - 1];
      if (last && mergeable(last, entry)) last.length += entry.length;
      else out.push(entry);
    }
    return out;
  } finally {
    await img.close();
  }
}
