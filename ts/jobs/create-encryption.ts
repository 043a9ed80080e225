/**
 * Create-time encryption options: qcow/qcow2 `encryption=` and `encrypt.*`, and the luks format's
 * own `key-secret`, `cipher-alg`, … — validated with qemu-img's messages, the secret resolved to
 * bytes. Messages name the option and the secret's id, never its data.
 */
import { QimgError } from "../errors.js";
import type { QomObject } from "../options/object.js";
import { resolveKeySecret } from "../options/secrets.js";

/** The encryption fields of the native create options. */
export interface NativeEncryption {
  /** `aes` or `luks`. */
  encryptFormat?: string;
  /** The secret's bytes (the caller wipes them after use). */
  encryptionKey?: Buffer;
  /** The secret's id. */
  keySecretId?: string;
  /** LUKS cipher algorithm. */
  cipherAlg?: string;
  /** LUKS cipher mode. */
  cipherMode?: string;
  /** LUKS IV generator. */
  ivgenAlg?: string;
  /** LUKS IV generator hash. */
  ivgenHashAlg?: string;
  /** LUKS hash. */
  hashAlg?: string;
  /** LUKS PBKDF time in milliseconds. */
  iterTime?: number;
}

const LUKS_KEYS = ["cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg", "iter-time"];

function bad(filename: string, msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", `${filename}: ${msg}`, { path: filename });
}

function boolValue(v: string | number | boolean): boolean | undefined {
  if (v === true || v === "on" || v === "true") return true;
  if (v === false || v === "off" || v === "false") return false;
  return undefined;
}

/** LUKS parameters under `prefix` (`encrypt.` for qcow2, empty for the luks format). */
function luksFields(o: Record<string, string | number | boolean>, prefix: string, filename: string) {
  const s = (k: string) => (o[prefix + k] === undefined ? undefined : String(o[prefix + k]));
  const iter = s("iter-time");
  if (iter !== undefined && !/^\d+$/.test(iter)) {
    throw bad(filename, `Parameter '${prefix}iter-time' expects a number`);
  }
  return {
    cipherAlg: s("cipher-alg"),
    cipherMode: s("cipher-mode"),
    ivgenAlg: s("ivgen-alg"),
    ivgenHashAlg: s("ivgen-hash-alg"),
    hashAlg: s("hash-alg"),
    iterTime: iter === undefined ? undefined : Number(iter),
  };
}

function withKey(
  out: NativeEncryption,
  id: string | undefined,
  param: string,
  filename: string,
  objects: readonly QomObject[] | undefined,
): NativeEncryption {
  if (id === undefined) throw bad(filename, `Parameter '${param}' is required for cipher`);
  try {
    return { ...out, keySecretId: id, encryptionKey: resolveKeySecret(objects, id) };
  } catch (e) {
    if (e instanceof QimgError) throw new QimgError(e.code, `${filename}: ${e.message}`, { path: filename });
    throw e;
  }
}

/**
 * Map the `-o` options of `format` to the native encryption fields; `{}` for an unencrypted image.
 * Throws qemu-img's errors for conflicting, missing or unexpected options and unknown secrets.
 */
export function encryptionOptions(
  format: string,
  o: Record<string, string | number | boolean>,
  filename: string,
  objects?: readonly QomObject[],
): NativeEncryption {
  if (format === "luks") {
    const id = o["key-secret"] === undefined ? undefined : String(o["key-secret"]);
    return withKey(
      { encryptFormat: "luks", ...luksFields(o, "", filename) },
      id,
      "key-secret",
      filename,
      objects,
    );
  }
  if (format !== "qcow" && format !== "qcow2") return {};
  const legacy = o.encryption;
  let encFormat = o["encrypt.format"] === undefined ? undefined : String(o["encrypt.format"]);
  if (legacy !== undefined && encFormat !== undefined) {
    throw bad(filename, "'encrypt.format' and its alias 'encryption' can't be used at the same time");
  }
  if (legacy !== undefined) {
    const on = boolValue(legacy);
    if (on === undefined) throw bad(filename, "Parameter 'encryption' expects 'on' or 'off'");
    if (on) encFormat = "aes";
  }
  const extra = Object.keys(o).filter((k) => k.startsWith("encrypt.") && k !== "encrypt.format");
  if (encFormat === undefined) {
    if (extra.length > 0) throw bad(filename, "Parameter 'encrypt.format' is missing");
    return {};
  }
  if (encFormat !== "aes" && encFormat !== "luks") {
    throw bad(filename, `Parameter 'format' does not accept value '${encFormat}'`);
  }
  if (format === "qcow" && encFormat !== "aes") throw bad(filename, "Unsupported encryption format");
  const id = o["encrypt.key-secret"] === undefined ? undefined : String(o["encrypt.key-secret"]);
  if (encFormat === "aes") {
    const unexpected = extra.find((k) => k !== "encrypt.key-secret");
    if (unexpected) throw bad(filename, `Parameter '${unexpected}' is unexpected`);
    return withKey({ encryptFormat: "aes" }, id, "encrypt.key-secret", filename, objects);
  }
  const unknown = extra.find((k) => k !== "encrypt.key-secret" && !LUKS_KEYS.includes(k.slice(8)));
  if (unknown) throw bad(filename, `Parameter '${unknown}' is unexpected`);
  return withKey(
    { encryptFormat: "luks", ...luksFields(o, "encrypt.", filename) },
    id,
    "encrypt.key-secret",
    filename,
    objects,
  );
}

/**
 * The warning qimg prints when it creates a legacy AES image. qemu-img itself prints none;
 * QEMU's system emulators refuse such images ("Use of AES-CBC encrypted qcow2 images is no
 * longer supported in system emulators"), so qimg says so, for data liberation only.
 */
export function legacyAesWarning(
  format: string,
  o: Record<string, string | number | boolean> | undefined,
): string | undefined {
  if (format !== "qcow" && format !== "qcow2") return undefined;
  const on = o?.["encrypt.format"] === "aes" || o?.encryption === "on" || o?.encryption === true;
  if (!on) return undefined;
  return (
    `warning: AES-CBC encrypted ${format} images are insecure and no longer supported by QEMU's ` +
    "system emulators; use them only to move data out (encrypt.format=luks, or the luks format)"
  );
}
