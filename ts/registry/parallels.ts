/** parallels: Parallels expandable images (v1 "WithoutFreeSpace", v2 "WithouFreSpacExt"). */
import type { FormatEntry } from "./types.js";

const V1 = "WithoutFreeSpace";
const V2 = "WithouFreSpacExt";

/** Either magic followed by version 2 scores 100, as QEMU's probe. */
export const parallelsFormat: FormatEntry = {
  name: "parallels",
  probe(head) {
    if (head.length < 64) return 0;
    const magic = String.fromCharCode(...head.subarray(0, 16));
    if (magic !== V1 && magic !== V2) return 0;
    const version = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(16, true);
    return version === 2 ? 100 : 0;
  },
  writable: true,
  supportsBacking: false,
  reportsDirtyFlag: false,
  supportsCheck: true,
  createOptions: [
    { name: "cluster_size", type: "size", help: "Parallels image cluster size", default: "1048576" },
    { name: "size", type: "size", help: "Virtual disk size" },
    {
      // The file protocol's option: accepted (as qemu-img does), without effect on the result,
      // since the parallels driver rewrites the file after the protocol created it.
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
  ],
};
