/** cloop: compressed loopback images, V2.0 (read-only, as in QEMU). */
import type { FormatEntry } from "./types.js";

const MAGIC = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

/** The V2.0 preamble (as far as the head goes) scores 2, as QEMU's probe. */
export const cloopFormat: FormatEntry = {
  name: "cloop",
  probe(head) {
    const n = Math.min(MAGIC.length, head.length);
    if (n === 0) return 0;
    for (let i = 0; i < n; i++) if (head[i] !== MAGIC.charCodeAt(i)) return 0;
    return 2;
  },
  writable: false,
  supportsBacking: false,
  reportsDirtyFlag: false,
  supportsCheck: false,
  createOptions: [],
};
