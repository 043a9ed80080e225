/** bochs: Bochs "growing" redolog images (read-only, as in QEMU). */
import type { FormatEntry } from "./types.js";

const MAGIC = "Bochs Virtual HD Image";

/** The NUL-terminated ASCII string in `b`. */
function cstr(b: Uint8Array): string {
  const end = b.indexOf(0);
  return String.fromCharCode(...(end < 0 ? b : b.subarray(0, end)));
}

/** Magic, "Redolog", "Growing" and version 1 or 2 score 100, as QEMU's probe. */
export const bochsFormat: FormatEntry = {
  name: "bochs",
  probe(head) {
    if (head.length < 512) return 0;
    if (cstr(head.subarray(0, 32)) !== MAGIC) return 0;
    if (cstr(head.subarray(32, 48)) !== "Redolog" || cstr(head.subarray(48, 64)) !== "Growing") return 0;
    const v = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(64, true);
    return v === 0x10000 || v === 0x20000 ? 100 : 0;
  },
  writable: false,
  supportsBacking: false,
  reportsDirtyFlag: false,
  supportsCheck: false,
  createOptions: [],
};
