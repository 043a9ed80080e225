/** `qemu-img snapshot`: `-l | -a | -c | -d SNAPSHOT`, `-f -q -U --image-opts --object`. */
import type { ParsedArgs } from "../argv.js";
import { has, last, type OptionSpec } from "../argv.js";
import type { QomObject } from "../object.js";
import { COMMON_LONG, fail, type ImageArg, imageArg, imageOptsExclusive, onePositional } from "./common.js";

/** qemu-img snapshot's options (getopt `la:c:d:f:hqU`, and qemu-img 10's long names). */
export const SNAPSHOT_SPEC: OptionSpec = {
  short: { l: false, a: true, c: true, d: true, f: true, h: false, q: false, U: false },
  long: {
    ...COMMON_LONG,
    quiet: [false, "q"],
    format: [true, "f"],
    "image-opts": [false, "image-opts"],
    "force-share": [false, "U"],
    list: [false, "l"],
    apply: [true, "a"],
    create: [true, "c"],
    delete: [true, "d"],
  },
};

/** A parsed `snapshot`. */
export interface SnapshotCommand {
  cmd: "snapshot";
  /** The filename (or `--image-opts` text) as given. */
  filename: string;
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** The operation: `-l` (the default), `-c`, `-a` or `-d` with its snapshot name. */
  action: { op: "list" } | { op: "create" | "apply" | "delete"; name: string };
  /** `-q`. */
  quiet: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

const OPS = { l: "list", c: "create", a: "apply", d: "delete" } as const;

/** Build a snapshot command from parsed arguments, with qemu-img's checks. */
export function buildSnapshot(p: ParsedArgs, objects: QomObject[]): SnapshotCommand {
  const given = p.opts.filter(([k]) => k in OPS);
  if (given.length > 1) fail("Cannot mix '-l', '-a', '-c', '-d'");
  const filename = onePositional(p);
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  let action: SnapshotCommand["action"] = { op: "list" };
  if (given.length === 1) {
    const [k, v] = given[0];
    const op = OPS[k as keyof typeof OPS];
    action = op === "list" ? { op } : { op, name: String(v) };
  }
  const c: SnapshotCommand = {
    cmd: "snapshot",
    filename,
    image: imageArg(filename, imageOpts),
    imageOpts,
    action,
    quiet: has(p, "q"),
    forceShare: has(p, "U"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  return c;
}
