/** The raw format: the image is the guest disk byte for byte. */
import type { FormatEntry } from "./types.js";

/** raw: always a (weakest) match; never auto-selected for writing. */
export const rawFormat: FormatEntry = {
  name: "raw",
  probe: () => 1,
  writable: true,
  supportsBacking: false,
  supportsCheck: false,
  createOptions: [
    { name: "size", type: "size", help: "Virtual disk size" },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
    {
      name: "nocow",
      type: "bool",
      help: "Turn off copy-on-write (valid only on btrfs)",
      default: "off",
      protocol: true,
    },
  ],
};
