/**
 * TLS credentials for NBD, as QEMU's `--object tls-creds-psk|tls-creds-x509,id=ID,dir=DIR,…`
 * defines them and an NBD node names them (`file.tls-creds=ID`, `file.tls-hostname=NAME`, or
 * qimg's `?tls-creds=ID&tls-hostname=NAME` URI query). The CLI registers its `--object`s here
 * before running a command; library callers call {@link defineObjects}. Resolving an ID checks
 * what QEMU checks (known ID, TLS type, client endpoint) with QEMU's messages.
 */
import { QimgError } from "../errors.js";
import type { QomObject } from "../options/object.js";
import { parseObjects } from "../options/object.js";

/** TLS settings handed to the native NBD client. */
export interface NativeNbdTls {
  /** `psk` or `x509`. */
  kind: "psk" | "x509";
  /** Credentials directory. */
  dir: string;
  /** PSK username (default "qemu"). */
  username?: string;
  /** x509 `verify-peer` (default on). */
  verifyPeer?: boolean;
  /** Name the server certificate must carry. */
  hostname?: string;
}

const objects = new Map<string, QomObject>();

const bad = (msg: string) => new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);

/**
 * Define user-creatable objects (`--object` strings or parsed objects) for later opens; an ID
 * defined again replaces the earlier definition.
 */
export function defineObjects(list: readonly (string | QomObject)[]): void {
  const strings = list.filter((o): o is string => typeof o === "string");
  const parsed = strings.length > 0 ? parseObjects(strings) : [];
  if (!Array.isArray(parsed)) throw bad("object help is not an object definition");
  for (const o of [...parsed, ...list.filter((o): o is QomObject => typeof o !== "string")]) {
    objects.set(o.id, o);
  }
}

/** Forget every defined object (tests). */
export function clearObjects(): void {
  objects.clear();
}

function onOff(v: unknown, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (v === true || v === "on" || v === "yes" || v === "true") return true;
  if (v === false || v === "off" || v === "no" || v === "false") return false;
  throw bad(`Parameter '${name}' expects 'on' or 'off'`);
}

/** The client TLS settings for credentials `id` (and `tls-hostname`), as QEMU validates them. */
export function resolveTls(id: string, hostname?: string): NativeNbdTls {
  const o = objects.get(id);
  if (!o) throw bad(`No TLS credentials with id '${id}'`);
  if (o.qomType !== "tls-creds-psk" && o.qomType !== "tls-creds-x509") {
    throw bad(`Object with id '${id}' is not TLS credentials`);
  }
  const p = o.props;
  const endpoint = p.endpoint ?? "client";
  if (endpoint !== "client" && endpoint !== "server") {
    throw bad(`Parameter 'endpoint' does not accept value '${String(endpoint)}'`);
  }
  if (endpoint !== "client") throw bad("Expected TLS credentials for a client endpoint");
  if (typeof p.dir !== "string" || p.dir === "") throw bad("Parameter 'dir' is missing");
  const out: NativeNbdTls =
    o.qomType === "tls-creds-psk"
      ? { kind: "psk", dir: p.dir }
      : { kind: "x509", dir: p.dir, verifyPeer: onOff(p["verify-peer"], "verify-peer", true) };
  if (o.qomType === "tls-creds-psk" && p.username !== undefined) out.username = String(p.username);
  if (hostname !== undefined) out.hostname = hostname;
  return out;
}
