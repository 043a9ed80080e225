/** One layer's `ImageInfo`, in qemu-img's JSON shape and field order. */
import * as fs from "node:fs/promises";
import { isNbdString } from "../graph/nbd.js";
import { isNvmeString } from "../graph/nvme.js";
import { callNative, type NativeImage, type NativeSnapshot } from "../native.js";
import { getFormat } from "../registry/index.js";
import { addVmdkExtents } from "./node-info-vmdk.js";

/** `qemu-img info --output=json` for one image. */
export interface ImageInfo {
  /** Child nodes (the protocol node). */
  children: Array<{ name: string; info: ImageInfo }>;
  /** Internal snapshots, when the image has any. */
  snapshots?: SnapshotJson[];
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
  /** Guest data is encrypted (present only when true, as qemu-img prints `encrypted: yes`). */
  encrypted?: boolean;
  /** Dirty flag (absent where qemu-img cannot tell, as for raw over NBD). */
  "dirty-flag"?: boolean;
  /** For `--backing-chain`: the next image. */
  "backing-image"?: ImageInfo;
}

/** One entry of `info`'s `snapshots` array, in qemu-img 10's field order. */
export interface SnapshotJson {
  /** Instruction count (absent when not recorded). */
  icount?: number;
  /** Guest clock: nanoseconds within the second. */
  "vm-clock-nsec": number;
  /** Name. */
  name: string;
  /** Creation time: seconds since the epoch. */
  "date-sec": number;
  /** Creation time: nanoseconds. */
  "date-nsec": number;
  /** Guest clock: whole seconds. */
  "vm-clock-sec": number;
  /** Unique ID. */
  id: string;
  /** Bytes of saved VM state. */
  "vm-state-size": number;
}

/** A snapshot (native or `SnapshotInfo`) in `info`'s JSON shape. */
export function snapshotJson(s: NativeSnapshot): SnapshotJson {
  const j = {} as SnapshotJson;
  if (s.icount !== undefined && s.icount !== null) j.icount = s.icount;
  j["vm-clock-nsec"] = s.vmClockNsec % 1e9;
  j.name = s.name;
  j["date-sec"] = s.dateSec;
  j["date-nsec"] = s.dateNsec;
  j["vm-clock-sec"] = Math.floor(s.vmClockNsec / 1e9);
  j.id = s.id;
  j["vm-state-size"] = s.vmStateSize;
  return j;
}

/** `info` of one opened layer (its native handle and file name). */
export async function nodeInfo(n: NativeImage, filename: string): Promise<ImageInfo> {
  const i = await callNative(() => n.info());
  if (isNbdString(filename)) return nbdNodeInfo(n, filename, i);
  if (isNvmeString(filename)) return nbdNodeInfo(n, filename, i, "nvme");
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
  const snaps = await callNative(() => n.snapshots());
  if (snaps.length > 0) ordered.snapshots = snaps.map(snapshotJson);
  if (i.backingFormat) ordered["backing-filename-format"] = i.backingFormat;
  ordered["virtual-size"] = i.virtualSize;
  ordered.filename = filename;
  if (i.clusterSize !== undefined && i.clusterSize !== null) ordered["cluster-size"] = i.clusterSize;
  ordered.format = i.format;
  ordered["actual-size"] = i.actualSize;
  if (i.formatSpecificJson) ordered["format-specific"] = JSON.parse(i.formatSpecificJson);
  const encrypted = i.encrypted || ordered["format-specific"]?.type === "luks";
  if (i.backingFile) {
    const path = await import("node:path");
    ordered["full-backing-filename"] =
      path.isAbsolute(i.backingFile) || /^[a-z]+:/.test(i.backingFile)
        ? i.backingFile
        : path.join(path.dirname(filename), i.backingFile);
    // qemu-img 10 prints `encrypted` between the two backing names.
    if (encrypted) ordered.encrypted = true;
    ordered["backing-filename"] = i.backingFile;
  } else if (encrypted) ordered.encrypted = true;
  if (getFormat(i.format).reportsDirtyFlag !== false) ordered["dirty-flag"] = i.dirty;
  await addVmdkExtents(ordered, filename);
  return ordered;
}

/**
 * `info` of a layer over the NBD protocol, as qemu-img prints it: the file child is the `nbd`
 * node (its length only), there is no disk size, and raw layers have no dirty flag.
 */
async function nbdNodeInfo(
  n: NativeImage,
  filename: string,
  i: Awaited<ReturnType<NativeImage["info"]>>,
  protocol = "nbd",
): Promise<ImageInfo> {
  // The NBD and NVMe storages report the export/namespace size as their allocated bytes.
  const file = { children: [], "virtual-size": i.actualSize, filename, format: protocol } as ImageInfo;
  const out = { children: [{ name: "file", info: file }] } as ImageInfo;
  const snaps = await callNative(() => n.snapshots());
  if (snaps.length > 0) out.snapshots = snaps.map(snapshotJson);
  if (i.backingFormat) out["backing-filename-format"] = i.backingFormat;
  out["virtual-size"] = i.virtualSize;
  out.filename = filename;
  if (i.clusterSize !== undefined && i.clusterSize !== null) out["cluster-size"] = i.clusterSize;
  out.format = i.format;
  if (i.formatSpecificJson) out["format-specific"] = JSON.parse(i.formatSpecificJson);
  if (i.backingFile) {
    out["full-backing-filename"] = i.backingFile;
    out["backing-filename"] = i.backingFile;
  }
  if (i.encrypted || out["format-specific"]?.type === "luks") out.encrypted = true;
  if (i.format !== "raw") out["dirty-flag"] = i.dirty;
  return out;
}
