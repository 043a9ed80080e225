/** `create()`: a new image from qemu-img's `-o` options, validated against the format registry. */
import { QimgError } from "../errors.js";
import { open } from "../graph/open.js";
import { callNative, native } from "../native.js";
import type { QomObject } from "../options/object.js";
import { parseSize } from "../options/size.js";
import { getFormat } from "../registry/index.js";
import { encryptionOptions, type NativeEncryption } from "./create-encryption.js";

/** Options of {@link create}. */
export interface CreateOptions {
  /** Format (`-f`, default raw). */
  format?: string;
  /** Virtual size in bytes; defaults to the backing file's size. */
  size?: number;
  /** `-o` options by qemu-img name (`cluster_size: "64k"`, `lazy_refcounts: "on"`, …). */
  options?: Record<string, string | number | boolean>;
  /** `-b`. */
  backingFile?: string;
  /** `-F`. */
  backingFormat?: string;
  /** `-u`: do not open the backing file (size must then be given). */
  unsafe?: boolean;
  /** Objects (`secret`s) for `encrypt.key-secret` / `key-secret`; default: the CLI's `--object`s. */
  objects?: readonly QomObject[];
}

function toBool(name: string, v: string | number | boolean): boolean {
  if (v === true || v === "on" || v === "true") return true;
  if (v === false || v === "off" || v === "false") return false;
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Parameter '${name}' expects 'on' or 'off'`);
}

function toSize(name: string, v: string | number | boolean): number {
  if (typeof v === "number") return v;
  if (typeof v !== "string")
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Parameter '${name}' expects a size`);
  return parseSize(v);
}

/** Create an image file (overwriting an existing file, as qemu-img does). */
export async function create(filename: string, opts: CreateOptions = {}): Promise<void> {
  const format = opts.format ?? "raw";
  const entry = getFormat(format);
  if (!entry.writable) {
    throw new QimgError("ERR_QIMG_UNSUPPORTED", `Format driver '${format}' does not support image creation`);
  }
  const o = { ...(opts.options ?? {}) };
  for (const k of Object.keys(o)) {
    if (!entry.createOptions.some((s) => s.name === k)) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid parameter '${k}'`, { path: filename });
    }
  }
  const backingFile = opts.backingFile ?? (o.backing_file as string | undefined);
  const backingFormat = opts.backingFormat ?? (o.backing_fmt as string | undefined);
  let size = opts.size ?? (o.size === undefined ? undefined : toSize("size", o.size));
  if (backingFile !== undefined) {
    if (!entry.supportsBacking) {
      throw new QimgError("ERR_QIMG_UNSUPPORTED", `Backing file not supported for file format '${format}'`);
    }
    if (backingFormat === undefined) {
      throw new QimgError(
        "ERR_QIMG_INVALID_ARGUMENT",
        "Backing file specified without backing format (use -F or -o backing_fmt=FMT)",
        { path: filename },
      );
    }
    if (!opts.unsafe) {
      const path = await import("node:path");
      const resolved = path.isAbsolute(backingFile)
        ? backingFile
        : path.join(path.dirname(filename), backingFile);
      const b = await open(resolved, { format: backingFormat, readOnly: true, forceShare: true });
      try {
        size ??= b.virtualSize;
      } finally {
        await b.close();
      }
    }
  }
  if (size === undefined) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Image creation needs a size parameter", {
      path: filename,
    });
  }
  const get = (k: string) => o[k];
  if (format === "luks" && ["on", "true", true].includes(o["detached-header"] as string | boolean))
    throw new QimgError("ERR_QIMG_UNSUPPORTED", "luks: detached headers are not supported", {
      path: filename,
    });
  const enc = encryptionOptions(format, o, filename, opts.objects);
  try {
    await createNative(filename, format, size, backingFile, backingFormat, get, enc);
  } finally {
    enc.encryptionKey?.fill(0);
  }
  const dataFile = get("data_file");
  if (dataFile !== undefined) {
    // The external data file, a raw file of the virtual size. As qemu-img, a relative name is
    // relative to the current directory (and opened from there later, as QEMU does).
    await callNative(() =>
      native.createImage({ filename: String(dataFile), format: "raw", size: size as number }),
    );
  }
}

async function createNative(
  filename: string,
  format: string,
  size: number,
  backingFile: string | undefined,
  backingFormat: string | undefined,
  get: (k: string) => string | number | boolean | undefined,
  enc: NativeEncryption,
): Promise<void> {
  const opt = (k: string) => get(k) as string | number | boolean;
  await callNative(() =>
    native.createImage({
      filename,
      format,
      size: size as number,
      preallocation: get("preallocation") === undefined ? undefined : String(get("preallocation")),
      nocow: get("nocow") === undefined ? undefined : toBool("nocow", opt("nocow")),
      compat: get("compat") === undefined ? undefined : normalizeCompat(String(get("compat"))),
      clusterSize:
        get("cluster_size") === undefined ? undefined : toSize("cluster_size", opt("cluster_size")),
      refcountBits: get("refcount_bits") === undefined ? undefined : Number(get("refcount_bits")),
      lazyRefcounts:
        get("lazy_refcounts") === undefined ? undefined : toBool("lazy_refcounts", opt("lazy_refcounts")),
      backingFile,
      backingFmt: backingFormat,
      extendedL2: get("extended_l2") === undefined ? undefined : toBool("extended_l2", opt("extended_l2")),
      compressionType: get("compression_type") === undefined ? undefined : String(get("compression_type")),
      dataFile: get("data_file") === undefined ? undefined : String(get("data_file")),
      dataFileRaw:
        get("data_file_raw") === undefined ? undefined : toBool("data_file_raw", opt("data_file_raw")),
      staticImage: get("static") === undefined ? undefined : toBool("static", opt("static")),
      subformat: get("subformat") === undefined ? undefined : String(get("subformat")),
      forceSize: get("force_size") === undefined ? undefined : toBool("force_size", opt("force_size")),
      tableSize: get("table_size") === undefined ? undefined : toSize("table_size", opt("table_size")),
      ...enc,
    }),
  );
}

function normalizeCompat(c: string): string {
  if (c === "v2" || c === "0.10") return "0.10";
  if (c === "v3" || c === "1.1") return "1.1";
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid compatibility level: '${c}'`);
}
