/**
 * `measure()`: how large a new image of a target format must be (`qemu-img measure`), for a given
 * size or for a copy of a source image, from the source's block status through its backing chain.
 */

import { QimgError } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import type { Image } from "../image.js";
import { native } from "../native.js";
import { resolveKeySecret } from "../options/secrets.js";
import { parseSizeBig } from "../options/size.js";
import { getFormat } from "../registry/index.js";
import {
  type MeasureExtent,
  type Qcow2Geometry,
  qcow2Measure,
  qcow2RequiredData,
  qcow2TooLarge,
  rawMeasure,
} from "./measure-math.js";

/** Options of {@link measure}. */
export interface MeasureOptions extends Pick<OpenOptions, "format" | "forceShare" | "locking"> {
  /** Target format (`-O`, default raw). */
  targetFormat?: string;
  /** Target creation options (`-o`) by qemu-img name. */
  options?: Record<string, string>;
}

/** `qemu-img measure --output=json`, with sizes as bigint. */
export interface MeasureResult {
  /** Bytes the new image needs. */
  required: bigint;
  /** Bytes it takes fully allocated. */
  fullyAllocated: bigint;
  /** Bytes of persistent dirty bitmaps to copy, when both formats support them. */
  bitmaps?: bigint;
}

function invalid(msg: string): never {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

function bool(name: string, v: string | undefined): boolean {
  if (v === undefined || v === "off" || v === "false") return false;
  if (v === "on" || v === "true") return true;
  invalid(`Parameter '${name}' expects 'on' or 'off'`);
}

function size(name: string, v: string): bigint {
  try {
    return parseSizeBig(v);
  } catch {
    invalid(`Parameter '${name}' expects a non-negative number below 2^64`);
  }
}

/** The qcow2 target's geometry and version from `-o`, with QEMU's checks and messages in its order. */
export function qcow2Target(
  o: Record<string, string>,
): Qcow2Geometry & { version: 2 | 3; prealloc: string; luksBytes: bigint } {
  const extendedL2 = bool("extended_l2", o.extended_l2);
  const clusterSize = o.cluster_size === undefined ? 65536n : size("cluster_size", o.cluster_size);
  if (clusterSize < 512n || clusterSize > 2n << 20n || (clusterSize & (clusterSize - 1n)) !== 0n)
    invalid("Cluster size must be a power of two between 512 and 2048k");
  if (extendedL2 && clusterSize < 16384n)
    invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  const compat = o.compat ?? "v3";
  let version: 2 | 3;
  if (compat === "0.10" || compat === "v2") version = 2;
  else if (compat === "1.1" || compat === "v3") version = 3;
  else invalid(`Invalid compatibility level: '${compat}'`);
  let refcountBits = 16n;
  if (o.refcount_bits !== undefined) {
    const r = /^\d+$/.test(o.refcount_bits) ? BigInt(o.refcount_bits) : -1n;
    if (r < 1n || r > 64n || (r & (r - 1n)) !== 0n)
      invalid("Refcount width must be a power of two and may not exceed 64 bits");
    if (version < 3 && r !== 16n)
      invalid(
        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
      );
    refcountBits = r;
  }
  const prealloc = o.preallocation ?? "off";
  if (!["off", "metadata", "falloc", "full"].includes(prealloc))
    invalid(`invalid parameter value: ${prealloc}`);
  // QEMU counts only a LUKS header's clusters; AES changes nothing in the arithmetic.
  const luksBytes = o["encrypt.format"] === "luks" ? luksHeaderBytes(o, clusterSize) : 0n;
  return { clusterSize, refcountBits, extendedL2, version, prealloc, luksBytes };
}

/**
 * Bytes the source's persistent dirty bitmaps would take in a qcow2 target of `clusterSize`
 * (QEMU's `qcow2_get_persistent_dirty_bitmap_size`: tables and data clusters, computed in Rust).
 */
export async function persistentBitmapsSize(source: Image, clusterSize: bigint): Promise<bigint> {
  const list = await source.bitmaps();
  if (list.length === 0) return 0n;
  return BigInt(native.measureBitmaps(list, source.virtualSize, Number(clusterSize)));
}

/** QEMU's `bdrv_supports_persistent_dirty_bitmap`: only qcow2 version 3 sources can hold them. */
async function supportsPersistentBitmaps(img: Image): Promise<boolean> {
  if (img.format !== "qcow2") return false;
  return (await img.info())["format-specific"]?.data.compat === "1.1";
}

/** QemuOpts' own checks of `-o` (names, then value types), with qemu-img's two-line messages. */
function checkOptions(format: string, o: Record<string, string>): void {
  const entry = getFormat(format);
  const fail = (msg: string): never => {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `${msg}\nInvalid options for file format '${format}'`);
  };
  for (const [k, v] of Object.entries(o)) {
    const spec = entry.createOptions.find((s) => s.name === k);
    if (!spec) fail(`Invalid parameter '${k}'`);
    else if (spec.type === "bool" && !["on", "off", "true", "false"].includes(v))
      fail(`Parameter '${k}' expects 'on' or 'off'`);
    else if (spec.type === "number" && !/^(0[xX][0-9a-fA-F]+|\d+)$/.test(v))
      fail(`Parameter '${k}' expects a number`);
    else if (spec.type === "size") {
      try {
        parseSizeBig(v);
      } catch {
        fail(
          `Parameter '${k}' expects a non-negative number below 2^64\n` +
            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
            "and exabytes, respectively.",
        );
      }
    }
  }
}

/**
 * Measure a new image of `opts.targetFormat` holding `source` (an image spec) or, when `source` is
 * a bigint, an empty image of that many bytes (`--size`).
 */
export async function measure(
  source: string | ImageOptions | bigint,
  opts: MeasureOptions = {},
): Promise<MeasureResult> {
  const format = opts.targetFormat ?? "raw";
  if (format !== "raw" && format !== "qcow2") {
    getFormat(format);
    throw new QimgError("ERR_QIMG_UNSUPPORTED", `Block driver '${format}' does not support size measurement`);
  }
  const o = opts.options ?? {};
  checkOptions(format, o);
  const g = format === "qcow2" ? qcow2Target(o) : undefined;
  if (g && typeof source === "bigint" && qcow2TooLarge(source, g))
    invalid("The image size is too large (try using a larger cluster size)");
  if (typeof source === "bigint") {
    if (!g) return rawMeasure(source, false);
    return withLuks(qcow2Measure(source, 0n, g, g.prealloc), g.luksBytes);
  }
  const img = await open(source, {
    format: opts.format,
    readOnly: true,
    forceShare: opts.forceShare,
    locking: opts.locking,
  });
  try {
    const vsize = BigInt(img.virtualSize);
    if (!g) return rawMeasure(vsize, true);
    if (qcow2TooLarge(vsize, g)) invalid("The image size is too large (try using a larger cluster size)");
    let data = 0n;
    if (o.backing_file !== undefined) {
      // QEMU assumes the new backing file shares nothing with the source: every cluster counts.
      data = ((vsize + g.clusterSize - 1n) / g.clusterSize) * g.clusterSize;
    } else {
      const extents: MeasureExtent[] = (await img.blockStatus()).map((e) => ({
        start: BigInt(e.start),
        length: BigInt(e.length),
        zero: e.zero,
        data: e.data && e.present,
      }));
      data = qcow2RequiredData(extents, vsize, g.clusterSize);
    }
    const r: MeasureResult = withLuks(qcow2Measure(vsize, data, g, g.prealloc), g.luksBytes);
    if (g.version >= 3 && (await supportsPersistentBitmaps(img)))
      r.bitmaps = await persistentBitmapsSize(img, g.clusterSize);
    return r;
  } finally {
    await img.close();
  }
}

/** A LUKS header's clusters on top of a qcow2 measure (QEMU adds them to both figures). */
function withLuks(r: MeasureResult, luks: bigint): MeasureResult {
  return luks === 0n ? r : { ...r, required: r.required + luks, fullyAllocated: r.fullyAllocated + luks };
}

/**
 * Bytes of the LUKS1 header area a qcow2 target gets (QEMU's
 * `qcrypto_block_calculate_payload_offset`), rounded up to clusters: 8 header sectors plus eight
 * key slots of `key bytes × 4000` stripes, each aligned to 8 sectors. The secret must resolve, as
 * qemu-img checks it.
 */
function luksHeaderBytes(o: Record<string, string>, clusterSize: bigint): bigint {
  const id = o["encrypt.key-secret"];
  if (id === undefined) invalid("Parameter 'encrypt.key-secret' is required for cipher");
  resolveKeySecret(undefined, id).fill(0);
  const alg = o["encrypt.cipher-alg"] ?? "aes-256";
  const bits = /^(aes|twofish|serpent|cast5)-(128|192|256)$/.exec(alg);
  if (!bits) invalid(`Parameter 'cipher-alg' does not accept value '${alg}'`);
  const keyBytes = (Number(bits[2]) / 8) * ((o["encrypt.cipher-mode"] ?? "xts") === "xts" ? 2 : 1);
  const stride = Math.ceil(Math.ceil((keyBytes * 4000) / 512) / 8) * 8;
  const bytes = BigInt((8 + 8 * stride) * 512);
  return ((bytes + clusterSize - 1n) / clusterSize) * clusterSize;
}
