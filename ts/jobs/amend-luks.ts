/**
 * `qemu-img amend` for luks images: add or erase key slots (`state`, `keyslot`, `new-secret`,
 * `old-secret`, `iter-time`). Secret ids are resolved here; their bytes cross to Rust
 * base64-encoded and never appear in messages.
 */
import { QimgError } from "../errors.js";
import { resolveKeySecret } from "../options/secrets.js";
import type { CreateOptionSpec } from "../registry/types.js";

/** luks's amendable options, in `-o help` order (qemu-img 10's list). */
export const LUKS_AMEND_OPTIONS: readonly CreateOptionSpec[] = [
  { name: "iter-time", type: "number", help: "Time to spend in PBKDF in milliseconds" },
  { name: "keyslot", type: "number", help: "Select a single keyslot to modify explicitly" },
  {
    name: "new-secret",
    type: "string",
    help: "New secret to set in the matching keyslots. Empty string to erase",
  },
  { name: "old-secret", type: "string", help: "Select all keyslots that match this password" },
  { name: "state", type: "string", help: "Select new state of affected keyslots (active/inactive)" },
];

function bad(msg: string): never {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/**
 * The native amend pairs for luks options `o`, secrets resolved from the object table. With
 * `prefix` ("encrypt." for qcow2) the option names carry it and the pairs keep it. Messages are
 * qemu-img 10's; the key slot checks themselves run in Rust on the header.
 */
export function planLuksAmend(
  o: Record<string, string>,
  prefix = "",
  force = false,
): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const [name, v] of Object.entries(o)) {
    if (!name.startsWith(prefix)) continue;
    const k = name.slice(prefix.length);
    if (!LUKS_AMEND_OPTIONS.some((s) => s.name === k)) bad(`Invalid parameter '${name}'`);
    if (k === "new-secret" || k === "old-secret") {
      const secret = resolveKeySecret(undefined, v);
      pairs.push([name, secret.toString("base64")]);
      secret.fill(0);
    } else if (k === "state") {
      if (v !== "active" && v !== "inactive") bad(`Parameter 'state' does not accept value '${v}'`);
      pairs.push([name, v]);
    } else {
      if (!(k === "keyslot" ? /^-?\d+$/ : /^\d+$/).test(v)) bad(`Parameter '${name}' expects a number`);
      pairs.push([name, v]);
    }
  }
  if (o[`${prefix}state`] === undefined) bad("Parameter 'state' is missing");
  if (force) pairs.push(["force", "on"]);
  return pairs;
}
