/** vhdx: Microsoft's Hyper-V virtual hard disk format (VHDX v1), as QEMU's vhdx driver. */
import type { FormatEntry } from "./types.js";

const SIGNATURE = "vhdxfile";

/**
 * vhdx probes by the file type identifier "vhdxfile" at offset 0, scoring 100 as QEMU does.
 * Differencing images name their parent in the parent locator; qimg opens it through the
 * implicit-open gate (QEMU refuses differencing images).
 */
export const vhdxFormat: FormatEntry = {
  name: "vhdx",
  probe(head) {
    if (head.length < 8) return 0;
    for (let i = 0; i < 8; i++) if (head[i] !== SIGNATURE.charCodeAt(i)) return 0;
    return 100;
  },
  writable: true,
  supportsBacking: false,
  supportsCheck: true,
  createOptions: [
    {
      name: "block_size",
      type: "size",
      help: "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.",
      default: "0",
    },
    {
      name: "block_state_zero",
      type: "bool",
      help: "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic.",
    },
    { name: "log_size", type: "size", help: "Log size; min 1MB.", default: "1048576" },
    { name: "size", type: "size", help: "Virtual disk size; max of 64TB." },
    {
      name: "subformat",
      type: "string",
      help: "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.",
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
