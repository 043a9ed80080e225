/** qed: the QEMU Enhanced Disk format. */
import type { FormatEntry } from "./types.js";

/** qed probes by its magic `QED\0`, scoring 100 as QEMU does. */
export const qedFormat: FormatEntry = {
  name: "qed",
  probe(head) {
    return head.length >= 4 && head[0] === 0x51 && head[1] === 0x45 && head[2] === 0x44 && head[3] === 0
      ? 100
      : 0;
  },
  writable: true,
  supportsBacking: true,
  supportsCheck: true,
  createOptions: [
    { name: "backing_file", type: "string", help: "File name of a base image" },
    { name: "backing_fmt", type: "string", help: "Image format of the base image" },
    { name: "cluster_size", type: "size", help: "Cluster size (in bytes)", default: "65536" },
    { name: "size", type: "size", help: "Virtual disk size" },
    { name: "table_size", type: "size", help: "L1/L2 table size (in clusters)" },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
  ],
};
