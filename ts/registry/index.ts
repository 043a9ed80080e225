/**
 * The format registry: every format qimg knows, probing by content with QEMU-like scores.
 * Raw is never auto-selected for writing (design: safety defaults).
 */
import { QimgError } from "../errors.js";
import { qcowFormat } from "./qcow.js";
import { qcow2Format } from "./qcow2.js";
import { qedFormat } from "./qed.js";
import { rawFormat } from "./raw.js";
import type { FormatEntry } from "./types.js";

export type { CreateOptionSpec, FormatEntry } from "./types.js";

const formats = new Map<string, FormatEntry>([
  [rawFormat.name, rawFormat],
  [qcow2Format.name, qcow2Format],
  [qedFormat.name, qedFormat],
  [qcowFormat.name, qcowFormat],
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

/** Pick the best-scoring format for `head`; ties go to the first registered. */
export function probeFormat(head: Uint8Array, filename: string): string {
  let best = rawFormat.name;
  let score = 0;
  for (const f of formats.values()) {
    const s = f.probe(head, filename);
    if (s > score) {
      score = s;
      best = f.name;
    }
  }
  return best;
}
