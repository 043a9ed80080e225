/**
 * Secrets: `--object secret,id=ID,data=…|file=…[,format=raw|base64]` resolved to bytes, as QEMU's
 * `qcrypto_secret_lookup`. The CLI registers its parsed `--object`s once as the process's object
 * table (QEMU's object root); library callers may pass their own list to `open()`/`create()`.
 * No message ever quotes secret data: only ids and file names.
 */
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
 * The bytes of secret `id` among `objects` (default: the process's object table). Errors, in
 * QEMU's words: `No secret with id 'ID'`, `Base64 data contains invalid characters`,
 * `Unable to read FILE: …`. Encrypted secrets (`keyid=`) are refused as unsupported.
 */
export function resolveSecret(objects: readonly QomObject[] | undefined, id: string): Buffer {
  const list = objects ?? defaultObjects;
  const o = list.find((x) => x.id === id);
  if (o?.qomType !== "secret") throw bad(`No secret with id '${id}'`);
  const p = o.props as Record<string, string | undefined>;
  if (p.keyid !== undefined) {
    throw new QimgError(
      "ERR_QIMG_UNSUPPORTED",
      `Secret '${id}': encrypted secrets (keyid=) are not supported`,
    );
  }
  const raw = p.data !== undefined ? Buffer.from(p.data, "utf8") : readSecretFile(String(p.file));
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
