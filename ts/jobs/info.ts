/**
 * `info()`: qemu-img's `ImageInfo`, with the same JSON field names and value types, including the
 * `children` (protocol node) section of qemu-img 10.
 */

import { type OpenOptions, open, toNodeSpec } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { callNative } from "../native.js";
import { type ImageInfo, nodeInfo } from "./node-info.js";

export type { ImageInfo } from "./node-info.js";

/** Options of {@link info}. */
export interface InfoOptions extends Pick<OpenOptions, "format" | "forceShare" | "locking" | "implicit"> {
  /** Describe the whole chain (`--backing-chain`): returns one entry per layer. */
  backingChain?: boolean;
}

/** Describe an image (and with `backingChain`, every layer, top first). */
export async function info(spec: string | ImageOptions, opts: InfoOptions = {}): Promise<ImageInfo[]> {
  // `-f nbd` / `driver=nbd`: the image is the NBD node itself, described as qemu-img does.
  const protocolTop = (opts.format ?? toNodeSpec(spec).format) === "nbd";
  const img = await open(spec, { ...opts, readOnly: true, noBacking: !opts.backingChain, purpose: "info" });
  try {
    if (protocolTop) {
      const i = await callNative(() => img.chain[0].info());
      return [
        { children: [], "virtual-size": i.virtualSize, filename: img.chainFilenames[0], format: "nbd" },
      ];
    }
    const out: ImageInfo[] = [];
    for (let k = 0; k < img.chain.length; k++) out.push(await nodeInfo(img.chain[k], img.chainFilenames[k]));
    return out;
  } finally {
    await img.close();
  }
}
