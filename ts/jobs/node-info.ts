/** One layer's `ImageInfo`, in qemu-img's JSON shape and field order. */
import * as fs from "node:fs/promises";
import { callNative, type NativeImage } from "../native.js";

/** `qemu-img info --output=json` for one image. */
export interface ImageInfo {
  /** Child nodes (the protocol node). */
  children: Array<{ name: string; info: ImageInfo }>;
  /** Backing format as stored in the image. */
  "backing-filename-format"?: string;
  /** Guest size. */
  "virtual-size": number;
  /** File name as given. */
  filename: string;
  /** Cluster size, if the format has one. */
  "cluster-size"?: number;
  /** Format name. */
  format: string;
  /** Host bytes used. */
  "actual-size"?: number;
  /** Format-specific data. */
  "format-specific"?: { type: string; data: Record<string, unknown> };
  /** Backing file resolved against the image's directory. */
  "full-backing-filename"?: string;
  /** Backing file as stored. */
  "backing-filename"?: string;
  /** Dirty flag. */
  "dirty-flag": boolean;
  /** For `--backing-chain`: the next image. */
  "backing-image"?: ImageInfo;
}

/** `info` of one opened layer (its native handle and file name). */
export async function nodeInfo(n: NativeImage, filename: string): Promise<ImageInfo> {
  const i = await callNative(() => n.info());
  const st = await fs.stat(filename);
  const file: ImageInfo = {
    children: [],
    // QEMU counts the file's length in 512-byte sectors, rounded up.
    "virtual-size": Math.ceil(st.size / 512) * 512,
    filename,
    format: "file",
    "actual-size": i.actualSize,
    "format-specific": { type: "file", data: {} },
    "dirty-flag": false,
  };
  const out: ImageInfo = {
    children: [{ name: "file", info: file }],
    "virtual-size": i.virtualSize,
    filename,
    format: i.format,
    "dirty-flag": i.dirty,
  };
  // Field order follows qemu-img 10's JSON output.
  const ordered: ImageInfo = { children: out.children } as ImageInfo;
  if (i.backingFormat) ordered["backing-filename-format"] = i.backingFormat;
  ordered["virtual-size"] = i.virtualSize;
  ordered.filename = filename;
  if (i.clusterSize !== undefined && i.clusterSize !== null) ordered["cluster-size"] = i.clusterSize;
  ordered.format = i.format;
  ordered["actual-size"] = i.actualSize;
  if (i.formatSpecificJson) ordered["format-specific"] = JSON.parse(i.formatSpecificJson);
  if (i.backingFile) {
    const path = await import("node:path");
    ordered["full-backing-filename"] =
      path.isAbsolute(i.backingFile) || /^[a-z]+:/.test(i.backingFile)
        ? i.backingFile
        : path.join(path.dirname(filename), i.backingFile);
    ordered["backing-filename"] = i.backingFile;
  }
  ordered["dirty-flag"] = i.dirty;
  return ordered;
}
