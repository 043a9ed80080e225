/**
 * The format registry: every format qimg knows, probing by content with QEMU-like scores.
 * Raw is never auto-selected for writing (design: safety defaults).
 */
import { QimgError } from "../errors.js";
import { bochsFormat } from "./bochs.js";
import { cloopFormat } from "./cloop.js";
import { dmgFormat } from "./dmg.js";
import { luksFormat } from "./luks.js";
import { parallelsFormat } from "./parallels.js";
import { qcowFormat } from "./qcow.js";
import { qcow2Format } from "./qcow2.js";
import { qedFormat } from "./qed.js";
import { rawFormat } from "./raw.js";
import type { FormatEntry } from "./types.js";
import { vdiFormat } from "./vdi.js";
import { vpcFormat } from "./vpc.js";

export type { CreateOptionSpec, FormatEntry } from "./types.js";

const formats = new Map<string, FormatEntry>([
  [rawFormat.name, rawFormat],
  [qcow2Format.name, qcow2Format],
  [vdiFormat.name, vdiFormat],
  [vpcFormat.name, vpcFormat],
  [parallelsFormat.name, parallelsFormat],
  [bochsFormat.name, bochsFormat],
  [cloopFormat.name, cloopFormat],
  [dmgFormat.name, dmgFormat],
  [qedFormat.name, qedFormat],
  [qcowFormat.name, qcowFormat],
  [luksFormat.name, luksFormat],
]);

/** The registry entry for `name`, or a QEMU-worded error. */
export function getFormat(name: string): FormatEntry {
  const f = formats.get(name);
  if (!f) throw new QimgError("ERR_QIMG_UNSUPPORTED", `Unknown driver '${name}'`);
  return f;
}

/** Every registered format name. */
export function formatNames(): string[] {
  return [...formats.keys()];
}

/** Pick the best-scoring format for `head` (and the file's last 512 bytes, `tail`); ties go to the first registered. */
export function probeFormat(head: Uint8Array, filename: string, tail?: Uint8Array): string {
  let best = rawFormat.name;
  let score = 0;
  for (const f of formats.values()) {
    const s = f.probe(head, filename, tail);
    if (s > score) {
      score = s;
      best = f.name;
    }
  }
  return best;
}
