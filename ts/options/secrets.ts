/**
 * Secrets: `--object secret,id=ID,data=…|file=…[,format=raw|base64][,keyid=KEY,iv=IV]` resolved
 * to bytes, as QEMU's `qcrypto_secret_lookup`; `keyid` secrets are AES-256-CBC encrypted with
 * the (32-byte) secret KEY and the base64 IV, PKCS#7-padded. The CLI registers its parsed `--object`s once as the process's object
 * table (QEMU's object root); library callers may pass their own list to `open()`/`create()`.
 * No message ever quotes secret data: only ids and file names.
 */
import { createDecipheriv } from "node:crypto";
import { readFileSync } from "node:fs";
import { QimgError } from "../errors.js";
import type { QomObject } from "./object.js";

let defaultObjects: readonly QomObject[] = [];

/** Make `objects` the process's object table (the CLI calls this with its `--object`s). */
export function setDefaultObjects(objects: readonly QomObject[]): void {
  defaultObjects = objects;
}

/** The process's object table (empty unless {@link setDefaultObjects} was called). */
export function getDefaultObjects(): readonly QomObject[] {
  return defaultObjects;
}

function bad(msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** QEMU's `qbase64_decode`: only the base64 alphabet (and padding), else an error. */
function decodeBase64(text: string): Buffer {
  if (!/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(text)) throw bad("Base64 data contains invalid characters");
  return Buffer.from(text, "base64");
}

/** glib's wording for a file it could not read (`Failed to open file “F”: reason`). */
function readSecretFile(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const reasons: Record<string, string> = {
      ENOENT: "No such file or directory",
      EACCES: "Permission denied",
      EISDIR: "Is a directory",
      ENOTDIR: "Not a directory",
    };
    const why = (err.code && reasons[err.code]) ?? "Input/output error";
    const verb = err.code === "EISDIR" ? "Failed to read from file" : "Failed to open file";
    throw new QimgError("ERR_QIMG_IO", `Unable to read ${file}: ${verb} “${file}”: ${why}`, {
      path: file,
      cause: e,
    });
  }
}

/**
 * QEMU's `qcrypto_secret_decrypt`: `input` (base64 text when `format=base64`, else raw bytes)
 * decrypted with AES-256-CBC under the bytes of secret `keyid` (32 of them) and IV `iv`
 * (base64, 16 bytes); the last byte says how many padding bytes to drop, as QEMU reads it.
 */
function decryptSecret(
  earlier: readonly QomObject[],
  id: string,
  p: Record<string, string | undefined>,
  input: Buffer,
): Buffer {
  const keyid = String(p.keyid);
  if (keyid === id) throw bad(`Secret with id '${id}' has no data`);
  const key = resolveSecret(earlier, keyid);
  try {
    if (key.length !== 32) throw bad("Key should be 32 bytes in length");
    if (p.iv === undefined) throw bad("IV is required to decrypt secret");
    const iv = decodeBase64(p.iv);
    if (iv.length !== 16) throw bad(`IV should be 16 bytes in length not ${iv.length}`);
    const ct = p.format === "base64" ? decodeBase64(input.toString("latin1")) : input;
    if (ct.length % 16 !== 0) throw bad(`Length ${ct.length} must be a multiple of block size 16`);
    const d = createDecipheriv("aes-256-cbc", key, iv);
    d.setAutoPadding(false);
    const plain = Buffer.concat([d.update(ct), d.final()]);
    const pad = plain.length > 0 ? (plain[plain.length - 1] ?? 0) : 0;
    if (pad > 16 || pad > plain.length) {
      plain.fill(0);
      throw bad(`Incorrect number of padding bytes (${pad}) found on decrypted data`);
    }
    const out = Buffer.from(plain.subarray(0, plain.length - pad));
    plain.fill(0);
    return out;
  } finally {
    key.fill(0);
  }
}

/**
 * The bytes of secret `id` among `objects` (default: the process's object table). Errors, in
 * QEMU's words: `No secret with id 'ID'`, `Base64 data contains invalid characters`,
 * `Unable to read FILE: …`, and for encrypted secrets (`keyid=`) QEMU's decryption errors. As
 * in QEMU, an encrypted secret's key must be defined before it on the command line.
 */
export function resolveSecret(objects: readonly QomObject[] | undefined, id: string): Buffer {
  const list = objects ?? defaultObjects;
  const at = list.findIndex((x) => x.id === id);
  const o = list[at];
  if (o?.qomType !== "secret") throw bad(`No secret with id '${id}'`);
  const p = o.props as Record<string, string | undefined>;
  const raw = p.data !== undefined ? Buffer.from(p.data, "utf8") : readSecretFile(String(p.file));
  if (p.keyid !== undefined) return decryptSecret(list.slice(0, at), id, p, raw);
  return p.format === "base64" ? decodeBase64(raw.toString("latin1")) : raw;
}

/**
 * Load every secret once, as QEMU does when it creates the objects at startup: an unreadable file
 * or bad base64 fails the command before it touches any image. The bytes are wiped right away.
 */
export function loadSecrets(objects: readonly QomObject[]): void {
  for (const o of objects) if (o.qomType === "secret") resolveSecret(objects, o.id).fill(0);
}

/**
 * A passphrase or key secret for an encryption layer: {@link resolveSecret}, then QEMU's UTF-8
 * check (`Data from secret ID is not valid UTF-8`) that luks and the qcow AES cipher make.
 */
export function resolveKeySecret(objects: readonly QomObject[] | undefined, id: string): Buffer {
  const b = resolveSecret(objects, id);
  try {
    if (b.includes(0)) throw new Error("NUL");
    new TextDecoder("utf-8", { fatal: true }).decode(b);
  } catch {
    b.fill(0);
    throw bad(`Data from secret ${id} is not valid UTF-8`);
  }
  return b;
}
