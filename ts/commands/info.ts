/** `qimg info`: qemu-img's human and JSON output. */

import type { ImageOptions } from "../graph/spec.js";
import { type ImageInfo, info } from "../jobs/info.js";
import { type Io, qemuJson, sizeToStr } from "./output.js";
import { snapshotTable } from "./snapshot.js";

/** What the `info` command needs. */
export interface InfoArgs {
  /** The image (a filename, json: string, or parsed --image-opts). */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `--output`. */
  output: "human" | "json";
  /** `--backing-chain`. */
  backingChain: boolean;
  /** `-U`. */
  forceShare: boolean;
}

function specificLines(data: Record<string, unknown>, indent: string): string[] {
  const lines: string[] = [];
  const list = Array.isArray(data);
  for (const [k, v] of Object.entries(data)) {
    // Lists print as `[i]:` entries (qemu-img's bitmaps, their flags).
    const key = list ? `[${k}]` : k.replace(/-/g, " ");
    if (v !== null && typeof v === "object") {
      lines.push(`${indent}${key}:`);
      lines.push(...specificLines(v as Record<string, unknown>, `${indent}    `));
    } else lines.push(`${indent}${key}: ${v}`);
  }
  return lines;
}

/** Render one image as qemu-img's human `info` block. */
export function humanInfo(i: ImageInfo): string {
  const l = [
    `image: ${i.filename}`,
    `file format: ${i.format}`,
    `virtual size: ${sizeToStr(i["virtual-size"])} (${i["virtual-size"]} bytes)`,
    `disk size: ${i["actual-size"] === undefined ? "unavailable" : sizeToStr(i["actual-size"])}`,
  ];
  if (i.encrypted) l.push("encrypted: yes");
  if (i["cluster-size"] !== undefined) l.push(`cluster_size: ${i["cluster-size"]}`);
  if (i["backing-filename"] !== undefined) {
    const full = i["full-backing-filename"];
    l.push(
      `backing file: ${i["backing-filename"]}${full && full !== i["backing-filename"] ? ` (actual path: ${full})` : ""}`,
    );
  }
  if (i["backing-filename-format"] !== undefined)
    l.push(`backing file format: ${i["backing-filename-format"]}`);
  if (i["dirty-flag"]) l.push("cleanly shut down: no");
  if (i.snapshots) l.push(snapshotTable(i.snapshots).trimEnd());
  const fs = i["format-specific"];
  if (fs && Object.keys(fs.data).length > 0) {
    l.push("Format specific information:");
    l.push(...specificLines(fs.data, "    "));
  }
  for (const c of i.children) {
    l.push(`Child node '/${c.name}':`);
    l.push(`    filename: ${c.info.filename}`);
    l.push(`    protocol type: ${c.info.format}`);
    l.push(`    file length: ${sizeToStr(c.info["virtual-size"])} (${c.info["virtual-size"]} bytes)`);
    l.push(
      `    disk size: ${c.info["actual-size"] === undefined ? "unavailable" : sizeToStr(c.info["actual-size"])}`,
    );
  }
  return `${l.join("\n")}\n`;
}

/** Run `info`; returns the exit code. */
export async function infoCommand(a: InfoArgs, io: Io): Promise<number> {
  const chain = await info(a.image, {
    format: a.format,
    backingChain: a.backingChain,
    forceShare: a.forceShare,
  });
  if (a.output === "json") {
    io.out(`${qemuJson(a.backingChain ? chain : chain[0])}\n`);
  } else {
    io.out(chain.map(humanInfo).join("\n"));
  }
  return 0;
}
