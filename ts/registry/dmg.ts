/** dmg: Apple UDIF disk images (read-only). */
import type { FormatEntry } from "./types.js";

const KOLY = [0x6b, 0x6f, 0x6c, 0x79];

/**
 * By content: a koly trailer in the last 512 bytes scores 100. Without the tail, the `.dmg`
 * suffix scores 2, as QEMU's probe (which looks at the name only).
 */
export const dmgFormat: FormatEntry = {
  name: "dmg",
  probe(_head, filename, tail) {
    if (tail && tail.length >= 512 && KOLY.every((b, i) => tail[tail.length - 512 + i] === b)) return 100;
    return filename.endsWith(".dmg") ? 2 : 0;
  },
  writable: false,
  supportsBacking: false,
  reportsDirtyFlag: false,
  supportsCheck: false,
  createOptions: [],
};
