/**
 * `json:{...}` pseudo-filenames, as QEMU's parse_json_filename: the JSON object is flattened to
 * dotted keys (arrays to `key.0`, `key.1`, …) and crumpled back, so nested objects and dotted keys
 * (`"file.filename"`) mean the same. Bounded: at most 1 MiB of text and 32 levels of nesting.
 */
import { QimgError } from "../errors.js";
import { crumple, type OptionsDict } from "./keyvalue.js";

/** Longest `json:` filename accepted, in UTF-16 code units. */
export const MAX_JSON_FILENAME = 1 << 20;
/** Deepest nesting of objects and arrays accepted. */
export const MAX_JSON_DEPTH = 32;

function bad(msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** True if `s` is a `json:` pseudo-filename. */
export function isJsonFilename(s: string): boolean {
  return s.startsWith("json:");
}

/** Nesting depth of brackets outside strings, computed without recursion. */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) max = Math.max(max, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

function flatten(v: unknown, prefix: string, out: Record<string, unknown>): void {
  const entries: Array<[string, unknown]> | undefined = Array.isArray(v)
    ? v.map((x, i) => [String(i), x])
    : v !== null && typeof v === "object"
      ? Object.entries(v)
      : undefined;
  if (entries === undefined || (entries.length === 0 && prefix !== "")) {
    if (prefix in out) throw bad(`Duplicate key '${prefix}' in JSON options`);
    out[prefix] = entries === undefined ? v : Array.isArray(v) ? [] : {};
    return;
  }
  for (const [k, x] of entries) flatten(x, prefix ? `${prefix}.${k}` : k, out);
}

/**
 * Parse a `json:` filename into a nested options object. Errors: `Could not parse the JSON
 * options: …`, `Invalid JSON object given`, and the size, depth and key-conflict bounds.
 */
export function parseJsonFilename(s: string): OptionsDict {
  if (!isJsonFilename(s)) throw bad("not a json: filename");
  if (s.length > MAX_JSON_FILENAME) throw bad(`json: filename is longer than ${MAX_JSON_FILENAME} bytes`);
  const text = s.slice(5);
  if (nestingDepth(text) > MAX_JSON_DEPTH)
    throw bad(`json: filename nests deeper than ${MAX_JSON_DEPTH} levels`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad(`Could not parse the JSON options: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw bad("Invalid JSON object given");
  const flat: Record<string, unknown> = Object.create(null);
  flatten(v, "", flat);
  return crumple(flat, true);
}
