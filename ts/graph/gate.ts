/**
 * The implicit-open gate: every file an image names by itself (backing files, qcow2 external data
 * files; extents later) passes here before qimg opens it.
 *
 * Policies: `files` (default) allows plain host paths; `all` also allows `json:` and protocol
 * names; `none` (the untrusted profile) allows nothing.
 */
import * as path from "node:path";
import { QimgError } from "../errors.js";

/** Which implicit references may be followed. */
export type ImplicitPolicy = "none" | "files" | "all";

/** Resolve and admit a reference `name` found inside the image at `from`; throws if refused. */
export function admitImplicit(
  name: string,
  from: string,
  policy: ImplicitPolicy,
  what = "backing file",
  relativeTo: "image" | "cwd" = "image",
): string {
  if (policy === "none") {
    throw new QimgError(
      "ERR_QIMG_UNSUPPORTED",
      `Image '${from}' refers to ${what} '${name}', which the untrusted profile does not open`,
      { path: from },
    );
  }
  const special = name.startsWith("json:") || /^[a-z][a-z0-9+.-]*:/i.test(name);
  if (special && policy !== "all") {
    throw new QimgError(
      "ERR_QIMG_UNSUPPORTED",
      `Image '${from}' refers to ${what} '${name}'; protocol and json: references need implicit policy 'all'`,
      { path: from },
    );
  }
  if (special || path.isAbsolute(name)) return name;
  // QEMU opens a relative external data file name from the current directory, not the image's.
  if (relativeTo === "cwd") return path.resolve(name);
  // QEMU resolves a relative backing name against the directory of the image naming it.
  return path.join(path.dirname(from), name);
}
