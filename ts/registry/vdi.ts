/** vdi: VirtualBox's disk image format (version 1.1), as QEMU's vdi driver. */
import type { FormatEntry } from "./types.js";

/** vdi probes by the signature 0xbeda107f (little-endian) at 0x40, scoring 100 as QEMU does. */
export const vdiFormat: FormatEntry = {
  name: "vdi",
  probe(head) {
    if (head.length < 0x44) return 0;
    const sig = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0x40, true);
    return sig === 0xbeda107f ? 100 : 0;
  },
  writable: true,
  supportsBacking: false,
  supportsCheck: true,
  createOptions: [
    { name: "size", type: "size", help: "Virtual disk size" },
    { name: "static", type: "bool", help: "VDI static (pre-allocated) image", default: "off" },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
  ],
};
