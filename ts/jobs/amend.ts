/**
 * `amend()`: change a qcow2 image's format options in place as `qemu-img amend` does — compat
 * 0.10 ↔ 1.1, lazy_refcounts, refcount_bits, size — refusing what QEMU refuses with its messages.
 */
import { QimgError } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { callNative } from "../native.js";
import { parseSize } from "../options/size.js";
import { getFormat } from "../registry/index.js";
import type { CreateOptionSpec } from "../registry/types.js";
import { LUKS_AMEND_OPTIONS, planLuksAmend } from "./amend-luks.js";
import { formatOrProbe } from "./probe-raw.js";

/** Options of {@link amend}. */
/** `signal` stops the open's key derivation (`ERR_QIMG_ABORTED`), as for {@link open}. */
export interface AmendOptions
  extends Pick<OpenOptions, "format" | "locking" | "cache" | "signal" | "objects"> {
  /** `--force`: let LUKS key slot changes erase the last slot or overwrite an active one. */
  force?: boolean;
  /** Called with qemu-img's warnings (probing guessed raw). */
  onWarning?: (message: string) => void;
}

/** qcow2's amendable options, in `-o help` order (qemu-img 10's list). */
export const QCOW2_AMEND_OPTIONS: readonly CreateOptionSpec[] = [
  { name: "backing_file", type: "string", help: "File name of a base image" },
  { name: "backing_fmt", type: "string", help: "Image format of the base image" },
  { name: "compat", type: "string", help: "Compatibility level (v2 [0.10] or v3 [1.1])" },
  { name: "data_file", type: "string", help: "File name of an external data file" },
  { name: "data_file_raw", type: "bool", help: "The external data file must stay valid as a raw image" },
  { name: "encrypt.iter-time", type: "number", help: "Time to spend in PBKDF in milliseconds" },
  { name: "encrypt.keyslot", type: "number", help: "Select a single keyslot to modify explicitly" },
  {
    name: "encrypt.new-secret",
    type: "string",
    help: "New secret to set in the matching keyslots. Empty string to erase",
  },
  { name: "encrypt.old-secret", type: "string", help: "Select all keyslots that match this password" },
  { name: "encrypt.state", type: "string", help: "Select new state of affected keyslots (active/inactive)" },
  { name: "lazy_refcounts", type: "bool", help: "Postpone refcount updates" },
  { name: "refcount_bits", type: "number", help: "Width of a reference count entry in bits" },
  { name: "size", type: "size", help: "Virtual disk size" },
];

const TYPE = { size: "<size>", number: "<num>", bool: "<bool (on/off)>", string: "<str>" } as const;

/** `qemu-img amend -f FMT -o help`. */
export function amendHelp(format: string): string {
  getFormat(format);
  if (format === "luks") {
    const l = LUKS_AMEND_OPTIONS.map((o) => `  ${`${o.name}=${TYPE[o.type]}`.padEnd(22)} - ${o.help}`);
    return `Amend options for 'luks':\n${l.join("\n")}\n`;
  }
  if (format !== "qcow2")
    throw new QimgError(
      "ERR_QIMG_UNSUPPORTED",
      `Format driver '${format}' does not support option amendment`,
    );
  const lines = QCOW2_AMEND_OPTIONS.map((o) => `  ${`${o.name}=${TYPE[o.type]}`.padEnd(22)} - ${o.help}`);
  return `Amend options for '${format}':\n${lines.join("\n")}\n`;
}

function bad(msg: string): never {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

function bool(name: string, v: string): boolean {
  if (v === "on" || v === "true") return true;
  if (v === "off" || v === "false") return false;
  bad(`Parameter '${name}' expects 'on' or 'off'`);
}

/** The current qcow2 facts amend decisions depend on. */
interface Current {
  version: 2 | 3;
  refcountBits: number;
  lazy: boolean;
}

/** Check `o` against the image as QEMU's `qcow2_amend_options` does; returns the native pairs and size. */
export function planAmend(
  o: Record<string, string>,
  cur: Current,
  force = false,
): { pairs: Array<[string, string]>; size?: number } {
  const create = new Set(getFormat("qcow2").createOptions.map((s) => s.name));
  for (const k of Object.keys(o)) {
    if (QCOW2_AMEND_OPTIONS.some((s) => s.name === k)) continue;
    bad(
      create.has(k)
        ? `Invalid parameter '${k}'\nThis option is only supported for image creation`
        : `Invalid parameter '${k}'`,
    );
  }
  let size: number | undefined;
  if (o.size !== undefined) {
    try {
      size = parseSize(o.size);
    } catch {
      bad(
        "Parameter 'size' expects a non-negative number below 2^64\n" +
          "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
          "and exabytes, respectively.",
      );
    }
  }
  const pairs: Array<[string, string]> = [];
  // encrypt.* first: QEMU parses its amend options (and their secrets) before acting.
  if (Object.keys(o).some((k) => k.startsWith("encrypt.")))
    pairs.push(...planLuksAmend(o, "encrypt.", force));
  let version = cur.version;
  if (o.compat !== undefined) {
    if (o.compat === "0.10" || o.compat === "v2") version = 2;
    else if (o.compat === "1.1" || o.compat === "v3") version = 3;
    else bad(`Unknown compatibility level ${o.compat}`);
    pairs.push(["compat", version === 2 ? "0.10" : "1.1"]);
  }
  if (o.backing_file !== undefined || o.backing_fmt !== undefined)
    bad("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
  if (o.data_file !== undefined) bad("data-file can only be set for images that use an external data file");
  if (o.data_file_raw !== undefined) bool("data_file_raw", o.data_file_raw);
  if (o.data_file_raw === "on" || o.data_file_raw === "true")
    bad("data-file-raw cannot be set on existing images");
  if (o.lazy_refcounts !== undefined) {
    const lazy = bool("lazy_refcounts", o.lazy_refcounts);
    if (lazy && version < 3)
      bad("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    pairs.push(["lazy_refcounts", lazy ? "on" : "off"]);
  }
  if (o.refcount_bits !== undefined) {
    const r = /^\d+$/.test(o.refcount_bits) ? Number(o.refcount_bits) : -1;
    if (r < 1 || r > 64 || (r & (r - 1)) !== 0)
      bad("Refcount width must be a power of two and may not exceed 64 bits");
    if (version < 3 && r !== 16)
      bad(
        "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
      );
    pairs.push(["refcount_bits", String(r)]);
  }
  return size === undefined ? { pairs } : { pairs, size };
}

/** Amend `spec`'s format options (`-o` names and values, as qemu-img takes them). */
export async function amend(
  spec: string | ImageOptions,
  options: Record<string, string>,
  opts: AmendOptions = {},
): Promise<void> {
  const format = await formatOrProbe(spec, opts.format, opts.onWarning);
  if (format === "raw")
    throw new QimgError("ERR_QIMG_UNSUPPORTED", "Format driver 'raw' does not support option amendment");
  const img = await open(spec, {
    format,
    locking: opts.locking,
    noBacking: true,
    cache: opts.cache,
    signal: opts.signal,
    objects: opts.objects,
  });
  try {
    if (img.format === "luks") {
      const pairs = planLuksAmend(options, "", opts.force === true);
      await callNative(() => img.native.amend(pairs));
      return;
    }
    if (img.format !== "qcow2")
      throw new QimgError(
        "ERR_QIMG_UNSUPPORTED",
        `Format driver '${img.format}' does not support option amendment`,
      );
    const data = (await img.info())["format-specific"]?.data ?? {};
    const cur: Current = {
      version: data.compat === "0.10" ? 2 : 3,
      refcountBits: Number(data["refcount-bits"] ?? 16),
      lazy: data["lazy-refcounts"] === true,
    };
    const { pairs, size } = planAmend(options, cur, opts.force === true);
    // QEMU's order: upgrade, refcount width, lazy refcounts, size, downgrade.
    const downgrade = pairs.some(([k, v]) => k === "compat" && v === "0.10") && cur.version === 3;
    const first = downgrade ? pairs.filter(([k]) => k !== "compat") : pairs;
    if (first.length > 0) await callNative(() => img.native.amend(first));
    if (size !== undefined && size !== img.virtualSize) await img.resize(size);
    if (downgrade) await callNative(() => img.native.amend([["compat", "0.10"]]));
  } finally {
    await img.close();
  }
}
