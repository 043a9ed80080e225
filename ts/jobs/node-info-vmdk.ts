/**
 * `info` of a VMDK with extent files: qemu-img lists each extent file as a child node
 * (`extents.N`, last first, before `file`) and counts their allocated bytes in `actual-size`.
 */
import * as fs from "node:fs/promises";
import type { ImageInfo } from "./node-info.js";

/** Add the extent children of `info` (a vmdk node opened from `filename`) in place. */
export async function addVmdkExtents(info: ImageInfo, filename: string): Promise<void> {
  const fsd = info["format-specific"];
  if (fsd?.type !== "vmdk") return;
  const extents = (fsd.data.extents ?? []) as Array<{ filename?: string }>;
  const kids: Array<{ name: string; info: ImageInfo }> = [];
  let extra = 0;
  for (const [i, e] of extents.entries()) {
    if (!e.filename || e.filename === filename) continue;
    const st = await fs.stat(e.filename);
    const actual = st.blocks * 512;
    extra += actual;
    kids.unshift({
      name: `extents.${i}`,
      info: {
        children: [],
        "virtual-size": Math.ceil(st.size / 512) * 512,
        filename: e.filename,
        format: "file",
        "actual-size": actual,
        "format-specific": { type: "file", data: {} },
        "dirty-flag": false,
      },
    });
  }
  if (kids.length === 0) return;
  info.children = [...kids, ...info.children];
  if (info["actual-size"] !== undefined) info["actual-size"] += extra;
}
