/**
 * `--object` definitions (`secret,id=sec0,data=…`), parsed with QEMU's keyval grammar and the
 * implied key `qom-type`, validated like QEMU's user-creatable objects; nothing is created here.
 * Secret values never appear in error messages.
 */
import { QimgError } from "../errors.js";
import { type OptionsDict, parseKeyval } from "./keyvalue.js";

/** Properties of a `secret` object. */
export interface SecretProps {
  /** Inline secret data (mutually exclusive with `file`). */
  data?: string;
  /** File holding the secret. */
  file?: string;
  /** Encoding of the data: `raw` (default) or `base64`. */
  format?: "raw" | "base64";
  /** ID of another secret that encrypts this one. */
  keyid?: string;
  /** Base64 initialisation vector when `keyid` is used. */
  iv?: string;
}

/** A parsed `--object`. */
export interface QomObject {
  /** The QOM type (`secret`, `tls-creds-x509`, …). */
  qomType: string;
  /** The object's ID. */
  id: string;
  /** The remaining properties (nested where keys were dotted). */
  props: OptionsDict;
}

/** A request for help on objects (`--object help`, `--object secret,help`). */
export interface QomObjectHelp {
  /** Always true. */
  help: true;
  /** The type asked about, if any. */
  qomType?: string;
}

/** User-creatable QOM types a qemu-img build knows of. */
export const KNOWN_QOM_TYPES: ReadonlySet<string> = new Set([
  "authz-list",
  "authz-list-file",
  "authz-pam",
  "authz-simple",
  "iothread",
  "main-loop",
  "secret",
  "secret_keyring",
  "throttle-group",
  "tls-cipher-suites",
  "tls-creds-anon",
  "tls-creds-psk",
  "tls-creds-x509",
]);

const SECRET_PROPS = new Set(["data", "file", "format", "keyid", "iv", "loaded"]);

function bad(msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** QEMU's `id_wellformed`: a letter, then letters, digits, `-`, `.`, `_`. */
export function isWellFormedId(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_.-]*$/.test(id);
}

function validateSecret(props: OptionsDict): void {
  for (const k of Object.keys(props)) if (!SECRET_PROPS.has(k)) throw bad(`Parameter '${k}' is unexpected`);
  for (const [k, v] of Object.entries(props)) {
    if (typeof v !== "string") throw bad(`Invalid parameter type for '${k}', expected: string`);
  }
  const fmt = props.format;
  if (fmt !== undefined && fmt !== "raw" && fmt !== "base64") {
    throw bad(`Parameter 'format' does not accept value '${fmt}'`);
  }
  if (props.data !== undefined && props.file !== undefined)
    throw bad("'file' and 'data' are mutually exclusive");
  if (props.data === undefined && props.file === undefined)
    throw bad("Either 'file' or 'data' must be provided");
  if (fmt === "base64" && typeof props.data === "string" && !/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(props.data)) {
    throw bad("Base64 data contains invalid characters");
  }
}

/** Parse one `--object` argument. Returns a help request for `help` / `TYPE,help`. */
export function parseObject(s: string): QomObject | QomObjectHelp {
  let parsed: ReturnType<typeof parseKeyval>;
  try {
    parsed = parseKeyval(s, "qom-type");
  } catch (e) {
    // A stray comma inside secret data would make QEMU quote part of the secret: never do that.
    if (e instanceof QimgError && /(^|,)data=/.test(s)) throw bad(e.message.replace(/'[^']*'/g, "'…'"));
    throw e;
  }
  const { dict, help } = parsed;
  const qomType = dict["qom-type"];
  if (typeof qomType === "object") throw bad("Invalid parameter type for 'qom-type', expected: string");
  if (help) return qomType === undefined ? { help: true } : { help: true, qomType: qomType as string };
  if (qomType === undefined) throw bad("Parameter 'qom-type' is missing");
  if (!KNOWN_QOM_TYPES.has(qomType as string))
    throw bad(`Parameter 'qom-type' does not accept value '${qomType}'`);
  const id = dict.id;
  if (id === undefined) throw bad("Parameter 'id' is missing");
  if (typeof id !== "string" || !isWellFormedId(id)) {
    throw bad(
      "Parameter 'id' expects an identifier\n" +
        "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.",
    );
  }
  const props: OptionsDict = {};
  for (const [k, v] of Object.entries(dict)) if (k !== "qom-type" && k !== "id") props[k] = v;
  if (qomType === "secret") validateSecret(props);
  return { qomType: qomType as string, id, props };
}

/** True if a parsed object is a help request. */
export function isObjectHelp(o: QomObject | QomObject[] | QomObjectHelp): o is QomObjectHelp {
  return !Array.isArray(o) && "help" in o;
}

/**
 * Parse every `--object` argument in order. IDs must be unique (QEMU's `attempt to add duplicate
 * property 'ID' to object (type 'container')`). The first help request, if any, is returned alone.
 */
export function parseObjects(list: readonly string[]): QomObject[] | QomObjectHelp {
  const out: QomObject[] = [];
  const ids = new Set<string>();
  for (const s of list) {
    const o = parseObject(s);
    if (isObjectHelp(o)) return o;
    if (ids.has(o.id)) throw bad(`attempt to add duplicate property '${o.id}' to object (type 'container')`);
    ids.add(o.id);
    out.push(o);
  }
  return out;
}
