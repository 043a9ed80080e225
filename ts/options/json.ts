/** `json:{...}` pseudo-filenames: nested objects and dotted keys both work, as in QEMU. */
import { QimgError } from "../errors.js";
import { crumple } from "./keyvalue.js";

const MAX_JSON = 1 << 20;
const MAX_DEPTH = 32;

function flatten(v: unknown, prefix: string, out: Record<string, unknown>, depth: number): void {
  if (depth > MAX_DEPTH) throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "json: filename nests too deeply");
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out, depth + 1);
  } else {
    out[prefix] = v;
  }
}

/** Parse a `json:` filename into an options object. */
export function parseJsonFilename(s: string): Record<string, unknown> {
  if (!s.startsWith("json:")) throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "not a json: filename");
  if (s.length > MAX_JSON) throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "json: filename is too long");
  let v: unknown;
  try {
    v = JSON.parse(s.slice(5));
  } catch (e) {
    throw new QimgError(
      "ERR_QIMG_INVALID_ARGUMENT",
      `Could not parse the JSON options: ${(e as Error).message}`,
    );
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new QimgError(
      "ERR_QIMG_INVALID_ARGUMENT",
      "Could not parse the JSON options: an object is required",
    );
  }
  const flat: Record<string, unknown> = {};
  flatten(v, "", flat, 0);
  return crumple(flat);
}
