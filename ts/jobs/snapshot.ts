/**
 * `snapshot()`: qemu-img snapshot's list (`-l`), create (`-c`), apply (`-a`) and delete (`-d`)
 * of internal snapshots, with qemu-img's rules and messages: apply finds an ID, else a name;
 * delete finds a name only; list opens read-only (so `-U` works), the others writable.
 */
import { QimgError } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { SnapshotInfo } from "../image.js";

export type { SnapshotInfo, SnapshotSelector } from "../image.js";

/** What {@link snapshot} does. */
export type SnapshotAction =
  | { op: "list" }
  | { op: "create"; name: string }
  | { op: "apply"; name: string }
  | { op: "delete"; name: string };

/** Options of {@link snapshot}. */
export interface SnapshotOptions
  extends Pick<OpenOptions, "format" | "forceShare" | "locking" | "implicit"> {}

function failed(verb: string, name: string, e: unknown, notFound: string): never {
  const q = e instanceof QimgError ? e : undefined;
  let why = q?.message ?? String(e);
  if (e === undefined || q?.code === "ERR_QIMG_NOT_FOUND") why = notFound;
  else if (q?.code === "ERR_QIMG_UNSUPPORTED" && verb === "apply")
    why = "Block driver does not support snapshots";
  throw new QimgError(
    q?.code ?? (e === undefined ? "ERR_QIMG_NOT_FOUND" : "ERR_QIMG_IO"),
    `Could not ${verb} snapshot '${name}': ${why}`,
    {
      path: q?.path,
      cause: e,
    },
  );
}

/** Run one snapshot action on an image; resolves to the snapshot list after it. */
export async function snapshot(
  spec: string | ImageOptions,
  action: SnapshotAction,
  opts: SnapshotOptions = {},
): Promise<SnapshotInfo[]> {
  const readOnly = action.op === "list";
  if (opts.forceShare && !readOnly) {
    const file =
      typeof spec === "string"
        ? spec
        : (spec.filename ?? (typeof spec.file === "string" ? spec.file : spec.file?.filename));
    throw new QimgError(
      "ERR_QIMG_INVALID_ARGUMENT",
      `Could not open '${file ?? ""}': force-share=on can only be used with read-only images`,
    );
  }
  const img = await open(spec, { ...opts, readOnly, noBacking: true });
  try {
    switch (action.op) {
      case "list":
        break;
      case "create":
        await img.snapshotCreate(action.name).catch((e) => failed("create", action.name, e, "File exists"));
        break;
      case "apply":
        await img
          .snapshotApply(action.name)
          .catch((e) =>
            failed("apply", action.name, e, "Failed to load snapshot: No such file or directory"),
          );
        break;
      case "delete": {
        // As qemu-img: the first snapshot with this name, then exactly that ID and name.
        const sn = (await img.snapshots()).find((s) => s.name === action.name);
        if (!sn) failed("delete", action.name, undefined, "snapshot not found");
        await img
          .snapshotDelete({ id: sn.id, name: sn.name })
          .catch((e) => failed("delete", action.name, e, "snapshot not found"));
        break;
      }
    }
    return await img.snapshots();
  } finally {
    await img.close();
  }
}
