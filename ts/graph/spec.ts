/**
 * Image specs: what `open()` accepts (a filename, a `json:{…}` string, or an options object in
 * QEMU's `--image-opts` shape), normalized into one {@link NodeSpec}.
 */
import { QimgError } from "../errors.js";
import { isNbdString, type NbdTarget, nbdFilename, parseNbdOptions, parseNbdString } from "./nbd.js";
import { isNvmeString, type NvmeTarget, nvmeFilename, parseNvmeOptions, parseNvmeString } from "./nvme.js";

/** An image described as QEMU's block options (`driver`, `file.*`, `backing`). */
export interface ImageOptions {
  /** Format driver (`qcow2`, `raw`); probed when absent. */
  driver?: string;
  /** The protocol node: a filename or `{driver: 'file', filename, locking}`. */
  file?: string | { driver?: string; filename?: string; locking?: string; [k: string]: unknown };
  /** Shorthand for `file.filename`. */
  filename?: string;
  /** Backing image: a spec, or `null` to open without the backing file. */
  backing?: ImageOptions | string | null;
  /** Open read-only. */
  "read-only"?: boolean | string;
  /** Share all permissions (`-U`). */
  "force-share"?: boolean | string;
  /** Other driver options (kept for drivers that take them). */
  [key: string]: unknown;
}

/** A normalized node: format over a file, with the backing choice. */
export interface NodeSpec {
  /** Format, or undefined to probe. */
  format?: string;
  /** Host file name. */
  filename: string;
  /** `file.locking`. */
  locking?: "on" | "off" | "auto";
  /** Read-only from the spec itself. */
  readOnly?: boolean;
  /** Force-share from the spec itself. */
  forceShare?: boolean;
  /** `undefined`: use the image's own backing file; `null`: none; otherwise this spec. */
  backing?: NodeSpec | null;
  /**
   * Options for the image's own backing file when `backing` names no file (QEMU's
   * `backing.encrypt.key-secret=…`, `backing.driver=…`): merged into the node the header names.
   */
  backingOptions?: NodeSpec;
  /** The `nbd` protocol node (`filename` then names it in messages). */
  nbd?: NbdTarget;
  /** The `nvme` protocol node (`filename` then names it in messages). */
  nvme?: NvmeTarget;
  /** `encrypt.key-secret` (qcow, qcow2) or `key-secret` (luks): the id of the secret object. */
  keySecret?: string;
  /** `encrypt.format` given at open (must match the header). */
  encryptFormat?: string;
}

/** `encrypt.X` from either a nested `encrypt` object or a flat dotted key. */
function encryptOpt(spec: ImageOptions, key: string): string | undefined {
  const nested = spec.encrypt;
  const v =
    nested !== null && typeof nested === "object" ? (nested as Record<string, unknown>)[key] : undefined;
  const got = v ?? spec[`encrypt.${key}`];
  return got === undefined ? undefined : String(got);
}

const PROTOCOLS = /^([a-z][a-z0-9+.-]*):\/\//i;

function boolOpt(v: unknown, name: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === true || v === "on" || v === "true") return true;
  if (v === false || v === "off" || v === "false") return false;
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Parameter '${name}' expects 'on' or 'off'`);
}

/** True for a backing spec that names no file: options for the header's own backing file. */
function optionsOnly(b: ImageOptions | string): boolean {
  if (typeof b === "string") return false;
  return b.file === undefined && b.filename === undefined && b.driver !== "nbd";
}

/** Normalize a spec's `backing`: `null`, a whole node, or options for the header's backing file. */
function backingOf(node: NodeSpec, spec: ImageOptions, parseJson: (s: string) => ImageOptions): void {
  if (spec.backing === null) node.backing = null;
  else if (spec.backing !== undefined && optionsOnly(spec.backing)) {
    node.backingOptions = normalizeSpec({ ...(spec.backing as ImageOptions), filename: "-" }, parseJson);
    node.backingOptions.filename = "";
  } else if (spec.backing !== undefined) node.backing = normalizeSpec(spec.backing, parseJson);
}

/** Normalize a spec string or object. `parseJson` turns a `json:` string into options. */
export function normalizeSpec(spec: string | ImageOptions, parseJson: (s: string) => ImageOptions): NodeSpec {
  if (typeof spec === "string") {
    if (spec.startsWith("json:")) return normalizeSpec(parseJson(spec), parseJson);
    if (isNbdString(spec)) {
      const nbd = parseNbdString(spec);
      return { filename: nbdFilename(nbd), nbd };
    }
    if (isNvmeString(spec)) return { filename: spec, nvme: parseNvmeString(spec) };
    const m = PROTOCOLS.exec(spec);
    if (m || /^(nbd|nvme|iscsi|ssh|gluster|sheepdog|fat):/.test(spec)) {
      const proto = m ? m[1] : spec.split(":")[0];
      throw new QimgError("ERR_QIMG_UNSUPPORTED", `Unknown protocol '${proto}'`, { path: spec });
    }
    return { filename: spec };
  }
  // `driver=nbd` at the top: the NBD node itself is the image (qemu-img reports format `nbd`).
  if (spec.driver === "nbd") return topNbd(spec, parseJson);
  const file = spec.file;
  let filename = spec.filename;
  let locking: string | undefined;
  let nbd: NbdTarget | undefined;
  let nvme: NvmeTarget | undefined;
  if (typeof file === "string") filename = file;
  else if (file?.driver === "nbd") {
    nbd = parseNbdOptions(file);
    filename = nbdFilename(nbd);
  } else if (file?.driver === "nvme") {
    nvme = parseNvmeOptions(file);
    filename = nvmeFilename(nvme);
  } else if (file) {
    if (file.driver !== undefined && file.driver !== "file") {
      throw new QimgError("ERR_QIMG_UNSUPPORTED", `Unknown protocol driver '${file.driver}'`);
    }
    filename = file.filename;
    locking = file.locking;
  }
  if (typeof filename !== "string" || filename === "") {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", 'A block device must be specified for "file"');
  }
  if (locking !== undefined && !["on", "off", "auto"].includes(locking)) {
    throw new QimgError(
      "ERR_QIMG_INVALID_ARGUMENT",
      `Parameter 'locking' does not accept value '${locking}'`,
    );
  }
  const node: NodeSpec = { filename };
  if (nbd) node.nbd = nbd;
  if (nvme) node.nvme = nvme;
  if (spec.driver !== undefined && spec.driver !== "file") node.format = spec.driver;
  if (locking) node.locking = locking as NodeSpec["locking"];
  const ro = boolOpt(spec["read-only"], "read-only");
  if (ro !== undefined) node.readOnly = ro;
  const fs = boolOpt(spec["force-share"], "force-share");
  if (fs !== undefined) node.forceShare = fs;
  const keySecret = encryptOpt(spec, "key-secret") ?? spec["key-secret"];
  if (keySecret !== undefined) node.keySecret = String(keySecret);
  const encFormat = encryptOpt(spec, "format");
  if (encFormat !== undefined) node.encryptFormat = encFormat;
  backingOf(node, spec, parseJson);
  return node;
}

/** A top-level `driver=nbd` spec: the export read as raw, reported as the `nbd` protocol node. */
function topNbd(spec: ImageOptions, parseJson: (s: string) => ImageOptions): NodeSpec {
  const addr = spec.server ?? spec.host ?? spec.path;
  if (addr === undefined) throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "NBD server address missing");
  const nbd = parseNbdOptions(spec);
  const node: NodeSpec = { filename: nbdFilename(nbd), nbd, format: "nbd" };
  const ro = boolOpt(spec["read-only"], "read-only");
  if (ro !== undefined) node.readOnly = ro;
  const fs = boolOpt(spec["force-share"], "force-share");
  if (fs !== undefined) node.forceShare = fs;
  backingOf(node, spec, parseJson);
  return node;
}
