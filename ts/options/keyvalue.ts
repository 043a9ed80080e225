/**
 * QemuOpts-style `key=value,key2=value2` lists (`-o`, `--image-opts`, `--object`): `,,` is a
 * literal comma; a bare `help` or `?` asks for help. Dotted keys crumple into nested objects.
 */
import { QimgError } from "../errors.js";

/** One `key=value` pair in order. */
export interface KeyValue {
  /** Key (may be dotted). */
  key: string;
  /** Value as written (escapes removed). */
  value: string;
}

/** Split on single commas; `,,` stands for a literal comma. */
function splitEscaped(s: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    if (s[i] === ",") {
      if (s[i + 1] === ",") {
        cur += ",";
        i++;
      } else {
        out.push(cur);
        cur = "";
      }
    } else cur += s[i];
  }
  out.push(cur);
  return out;
}

/** Parse a list. `implied` names the key a leading bare value belongs to (e.g. `qom-type`). */
export function parseKeyValues(s: string, implied?: string): KeyValue[] {
  const out: KeyValue[] = [];
  splitEscaped(s).forEach((part, i) => {
    if (part === "" && i > 0) return;
    const eq = part.indexOf("=");
    if (eq < 0) {
      if (i === 0 && implied && part !== "help" && part !== "?") out.push({ key: implied, value: part });
      else if (part === "help" || part === "?") out.push({ key: "help", value: "on" });
      else if (part !== "") throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid parameter '${part}'`);
      return;
    }
    const key = part.slice(0, eq);
    if (key === "") throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid parameter '${part}'`);
    out.push({ key, value: part.slice(eq + 1) });
  });
  return out;
}

/** Escape a value for a list (`,` → `,,`). */
export function escapeValue(v: string): string {
  return v.replace(/,/g, ",,");
}

/** Encode pairs back into a list (inverse of {@link parseKeyValues}). */
export function encodeKeyValues(kvs: KeyValue[]): string {
  return kvs.map((kv) => `${kv.key}=${escapeValue(kv.value)}`).join(",");
}

/** True if the list asks for help. */
export function wantsHelp(kvs: KeyValue[]): boolean {
  return kvs.some((kv) => kv.key === "help");
}

/** Last value of each key (qemu-img merges repeated `-o` options this way). */
export function toRecord(kvs: KeyValue[]): Record<string, string> {
  const r: Record<string, string> = {};
  for (const kv of kvs) if (kv.key !== "help") r[kv.key] = kv.value;
  return r;
}

/** Turn dotted keys into nested objects (`file.filename=x` → `{file: {filename: "x"}}`). */
export function crumple(flat: Record<string, unknown>): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(flat)) {
    const parts = k.split(".");
    let node = root;
    for (let i = 0; i < parts.length - 1; i++) {
      const p = parts[i];
      const next = node[p];
      if (next === undefined) node[p] = {};
      else if (typeof next !== "object" || next === null || Array.isArray(next)) {
        throw new QimgError(
          "ERR_QIMG_INVALID_ARGUMENT",
          `Parameter '${parts.slice(0, i + 1).join(".")}' conflicts with '${k}'`,
        );
      }
      node = node[p] as Record<string, unknown>;
    }
    const leaf = parts[parts.length - 1];
    if (leaf in node)
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Parameter '${k}' is given twice or conflicts`);
    node[leaf] = v;
  }
  return root;
}

/** `--image-opts` text → nested options object. */
export function parseImageOpts(s: string): Record<string, unknown> {
  return crumple(toRecord(parseKeyValues(s)));
}
