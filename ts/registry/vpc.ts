/** vpc: Microsoft's Virtual Hard Disk (VHD), dynamic and fixed, as QEMU's vpc driver. */
import type { FormatEntry } from "./types.js";

const COOKIE = "conectix";

/**
 * vpc probes by the footer cookie "conectix" at offset 0, scoring 100 as QEMU does. Fixed VHDs
 * keep their footer only at the end, so they probe as raw and need `-f vpc`, as in QEMU.
 */
export const vpcFormat: FormatEntry = {
  name: "vpc",
  probe(head) {
    if (head.length < 8) return 0;
    for (let i = 0; i < 8; i++) if (head[i] !== COOKIE.charCodeAt(i)) return 0;
    return 100;
  },
  writable: true,
  supportsBacking: false,
  supportsCheck: false,
  createOptions: [
    {
      name: "force_size",
      type: "bool",
      help: "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation",
    },
    { name: "size", type: "size", help: "Virtual disk size" },
    {
      name: "subformat",
      type: "string",
      help: "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ",
    },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
  ],
};
