/**
 * QEMU's two `key=value` list grammars. QemuOpts (`-o`, `--image-opts`): `,,` is a literal comma,
 * a bare `name` means `name=on` and `noname` means `name=off`, a bare `help` or `?` asks for help,
 * later values win. Keyval (`--object`): keys are QAPI names joined by dots into nested objects,
 * a bare word is only allowed as the implied first value.
 */
import { QimgError } from "../errors.js";

/** One `key=value` pair in order. */
export interface KeyValue {
  /** Key (may be dotted). */
  key: string;
  /** Value as written (escapes removed). */
  value: string;
}

/** A nested options object as QEMU's qdict_crumple makes it. */
export interface OptionsDict {
  [key: string]: unknown;
}

function bad(msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** True for QEMU's help words, `help` and `?`. */
export function isHelpOption(s: string): boolean {
  return s === "help" || s === "?";
}

/** Read a value up to the next single comma (`,,` is a comma); returns [value, next index]. */
function readValue(s: string, i: number): [string, number] {
  let v = "";
  while (i < s.length) {
    if (s[i] === ",") {
      if (s[i + 1] !== ",") break;
      i++;
    }
    v += s[i++];
  }
  return [v, i];
}

/**
 * Parse a QemuOpts list. `implied` names the key a leading bare value belongs to (QEMU's
 * `implied_opt_name`, e.g. `file` for `--image-opts`). Bare help words yield `{key: "help"}`.
 */
export function parseKeyValues(s: string, implied?: string): KeyValue[] {
  const out: KeyValue[] = [];
  let i = 0;
  let first = true;
  while (i < s.length) {
    let len = 0;
    while (i + len < s.length && s[i + len] !== "=" && s[i + len] !== ",") len++;
    if (s[i + len] !== "=") {
      if (first && implied) {
        const [v, next] = readValue(s, i);
        out.push({ key: implied, value: v });
        i = next;
      } else {
        const name = s.slice(i, i + len);
        if (isHelpOption(name)) out.push({ key: "help", value: "on" });
        else if (name.startsWith("no")) out.push({ key: name.slice(2), value: "off" });
        else out.push({ key: name, value: "on" });
        i += len;
      }
    } else {
      const key = s.slice(i, i + len);
      const [v, next] = readValue(s, i + len + 1);
      out.push({ key, value: v });
      i = next;
    }
    if (out[out.length - 1].key === "") throw bad("Invalid parameter ''");
    if (s[i] === ",") i++;
    first = false;
  }
  return out;
}

/** QEMU's `has_help_option`: some comma-separated element (after unescaping) is `help` or `?`. */
export function hasHelpOption(s: string): boolean {
  let i = 0;
  while (i < s.length) {
    const [v, next] = readValue(s, i);
    if (isHelpOption(v)) return true;
    i = next + 1;
  }
  return false;
}

/**
 * QEMU's `is_valid_option_list`: a list can be joined to others with `,` only if it is non-empty,
 * does not start with `,` and does not end with an odd number of commas.
 */
export function isValidOptionList(s: string): boolean {
  if (s === "" || s[0] === ",") return false;
  let n = 0;
  while (n < s.length && s[s.length - 1 - n] === ",") n++;
  return n % 2 === 0;
}

/**
 * Join repeated `-o` arguments as qemu-img's `accumulate_options` does; undefined if none.
 * Throws `Invalid option list: …` for a list that cannot be joined.
 */
export function accumulateOptions(lists: readonly string[]): string | undefined {
  for (const l of lists) if (!isValidOptionList(l)) throw bad(`Invalid option list: ${l}`);
  return lists.length ? lists.join(",") : undefined;
}

/** Escape a value for a list (`,` → `,,`). */
export function escapeValue(v: string): string {
  return v.replace(/,/g, ",,");
}

/** Encode one pair as `key=value` with the value escaped. */
export function encodeKeyValue(kv: KeyValue): string {
  return `${kv.key}=${escapeValue(kv.value)}`;
}

/** Encode pairs back into a list (inverse of {@link parseKeyValues} for keys without `=`/`,`). */
export function encodeKeyValues(kvs: readonly KeyValue[]): string {
  return kvs.map(encodeKeyValue).join(",");
}

/** True if the list asks for help. */
export function wantsHelp(kvs: readonly KeyValue[]): boolean {
  return kvs.some((kv) => kv.key === "help");
}

/** Last value of each key (later values win in QemuOpts); help requests are left out. */
export function toRecord(kvs: readonly KeyValue[]): Record<string, string> {
  const r: Record<string, string> = {};
  for (const kv of kvs) if (kv.key !== "help") r[kv.key] = kv.value;
  return r;
}

function isPlainObject(v: unknown): v is OptionsDict {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Turn dicts whose keys are exactly 0..n-1 into arrays (qdict_crumple's list rule). */
function listify(d: OptionsDict): unknown {
  for (const k of Object.keys(d)) if (isPlainObject(d[k])) d[k] = listify(d[k] as OptionsDict);
  const keys = Object.keys(d);
  if (keys.length === 0 || !keys.every((k) => /^(0|[1-9]\d*)$/.test(k))) return d;
  const arr: unknown[] = [];
  for (let i = 0; i < keys.length; i++) {
    if (!(String(i) in d)) throw bad(`Parameter '${i}' is missing`);
    arr.push(d[String(i)]);
  }
  return arr;
}

/**
 * Turn dotted keys into nested objects (`file.filename=x` → `{file: {filename: "x"}}`), as
 * qdict_crumple. A key used both as a value and as a prefix is refused (`Parameters 'a.*' used
 * inconsistently`). With `lists`, dicts keyed 0..n-1 become arrays.
 */
export function crumple(flat: Record<string, unknown>, lists = false): OptionsDict {
  const root: OptionsDict = Object.create(null);
  for (const [k, v] of Object.entries(flat)) {
    const parts = k.split(".");
    let node = root;
    for (let i = 0; i < parts.length - 1; i++) {
      const p = parts[i];
      const next = node[p];
      if (next === undefined) node[p] = Object.create(null);
      else if (!isPlainObject(next))
        throw bad(`Parameters '${parts.slice(0, i + 1).join(".")}.*' used inconsistently`);
      node = node[p] as OptionsDict;
    }
    const leaf = parts[parts.length - 1];
    if (isPlainObject(node[leaf])) throw bad(`Parameters '${k}.*' used inconsistently`);
    node[leaf] = v;
  }
  const plain = toPlain(root);
  return lists ? (listify(plain) as OptionsDict) : plain;
}

function toPlain(d: OptionsDict): OptionsDict {
  const out: OptionsDict = {};
  for (const k of Object.keys(d)) {
    const v = d[k];
    Object.defineProperty(out, k, {
      value: isPlainObject(v) ? toPlain(v) : v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/**
 * `--image-opts` text → nested options object. A leading bare value is `file` (qemu-img's
 * implied option name); `id` is dropped as QemuOpts does; later values win.
 */
export function parseImageOpts(s: string): OptionsDict {
  const rec = toRecord(parseKeyValues(s, "file"));
  delete rec.id;
  return crumple(rec);
}

/** Length of the QAPI name at the start of `s` (letters first; then letters, digits, `-`, `_`). */
function qapiNameLength(s: string): number {
  const m = /^(__[A-Za-z0-9.-]+_)?[A-Za-z][A-Za-z0-9_-]*/.exec(s);
  return m ? m[0].length : 0;
}

/** The result of {@link parseKeyval}: the nested options and whether help was asked. */
export interface KeyvalResult {
  /** Nested options (dotted keys crumpled). */
  dict: OptionsDict;
  /** True if a bare `help` or `?` appeared. */
  help: boolean;
}

/**
 * Parse QEMU keyval syntax (`--object`): `key=value` with dotted QAPI-name keys, `,,` escapes,
 * an implied first key for a leading bare value, later scalars win, and QEMU's messages:
 * `Invalid parameter 'k'`, `Expected '=' after parameter 'k'`, `Parameters 'a.*' used inconsistently`.
 */
export function parseKeyval(s: string, implied?: string): KeyvalResult {
  const dict: OptionsDict = Object.create(null);
  let help = false;
  let i = 0;
  let first = true;
  while (i < s.length) {
    let len = 0;
    while (i + len < s.length && s[i + len] !== "=" && s[i + len] !== ",") len++;
    const word = s.slice(i, i + len);
    if (len && s[i + len] !== "=") {
      if (isHelpOption(word)) {
        help = true;
        i += len + (s[i + len] === "," ? 1 : 0);
        first = false;
        continue;
      }
      if (first && implied) {
        put(dict, [implied], word, implied);
        i += len + (s[i + len] === "," ? 1 : 0);
        first = false;
        continue;
      }
    }
    first = false;
    const frags: string[] = [];
    let j = 0;
    for (;;) {
      const rest = word.slice(j);
      const idx = frags.length > 0 ? (/^\d+/.exec(rest)?.[0].length ?? 0) : 0;
      const n = idx || qapiNameLength(rest);
      if (!n || (j + n < word.length && word[j + n] !== ".")) throw bad(`Invalid parameter '${word}'`);
      if (n > 127)
        throw bad(
          `Parameter${frags.length || j + n < word.length ? " fragment" : ""} '${rest.slice(0, n)}' is too long`,
        );
      frags.push(rest.slice(0, n));
      j += n;
      if (j >= word.length) break;
      j++;
    }
    if (s[i + len] !== "=") throw bad(`Expected '=' after parameter '${word}'`);
    const [v, next] = readValue(s, i + len + 1);
    put(dict, frags, v, word);
    i = next < s.length ? next + 1 : next;
  }
  return { dict: toPlain(dict), help };
}

function put(dict: OptionsDict, frags: string[], value: string, key: string): void {
  let cur = dict;
  for (let k = 0; k < frags.length - 1; k++) {
    const old = cur[frags[k]];
    if (old === undefined) cur[frags[k]] = Object.create(null);
    else if (!isPlainObject(old))
      throw bad(`Parameters '${frags.slice(0, k + 1).join(".")}.*' used inconsistently`);
    cur = cur[frags[k]] as OptionsDict;
  }
  const leaf = frags[frags.length - 1];
  if (isPlainObject(cur[leaf])) throw bad(`Parameters '${key}.*' used inconsistently`);
  cur[leaf] = value;
}
