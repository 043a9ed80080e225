/**
 * VMDK extent files: a descriptor names the files holding its data. Each name passes the
 * implicit-open gate, stricter than for backing files: under the default `files` policy an
 * absolute name or one with a `..` component is refused (an untrusted descriptor must not reach
 * outside its directory); `all` allows them; `none` allows no extent file at all.
 */
import * as path from "node:path";
import { QimgError } from "../errors.js";
import { callNative, type NativeImage, native } from "../native.js";
import { admitImplicit, type ImplicitPolicy } from "./gate.js";

/** Admit one extent name found in the descriptor `from`; returns the path to open. */
export function admitExtent(name: string, from: string, policy: ImplicitPolicy): string {
  if (policy !== "all" && (path.isAbsolute(name) || name.split(/[\\/]/).includes(".."))) {
    throw new QimgError(
      "ERR_QIMG_UNSUPPORTED",
      `Image '${from}' refers to extent file '${name}' outside its directory; that needs implicit policy 'all'`,
      { path: from },
    );
  }
  return admitImplicit(name, from, policy, "extent file");
}

/** Open and attach the extent files of node `n` (a VMDK descriptor) in the node's own mode. */
export async function attachExtents(
  n: NativeImage,
  filename: string,
  readOnly: boolean,
  opts: {
    implicit?: ImplicitPolicy;
    locking?: "on" | "off" | "auto";
    forceShare?: boolean;
    purpose?: "info";
  },
  attached: NativeImage[],
): Promise<void> {
  if (n.format !== "vmdk") return;
  const names = await callNative(() => native.extentFiles(n));
  if (names.length === 0) return;
  const files: NativeImage[] = [];
  for (const name of names) {
    const p = admitExtent(name, filename, opts.implicit ?? "files");
    const f = await callNative(() =>
      native.openImage({
        filename: p,
        format: "raw",
        readOnly,
        locking: opts.locking,
        forceShare: opts.forceShare ?? false,
        purpose: opts.purpose,
      }),
    );
    attached.push(f);
    files.push(f);
  }
  await callNative(() => native.attachExtents(n, files));
}
