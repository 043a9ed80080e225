/**
 * `qemu-img convert` with qemu-img's letters (getopt `hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:`), its long
 * names (both those this qemu-img accepts and those its --help documents) and its checks.
 */
import { all, has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import { accumulateOptions, hasHelpOption, type KeyValue, parseKeyValues, toRecord } from "../keyvalue.js";
import type { QomObject } from "../object.js";
import { cvtnum } from "../size.js";
import { COMMON_LONG, cacheMode, fail, type ImageArg, imageArg, imageOptsExclusive } from "./common.js";
import type { OptionsHelpCommand } from "./create.js";

/** Most coroutines `-m` allows (qemu-img's MAX_COROUTINES). */
export const MAX_COROUTINES = 16;
/** Largest `-S` in bytes (MAX_BUF_SECTORS × 512). */
export const MAX_SPARSE_SIZE = 16 * 1024 * 1024;

/** qemu-img convert's options. */
export const CONVERT_SPEC: OptionSpec = {
  short: {
    h: false,
    f: true,
    O: true,
    B: true,
    C: false,
    c: false,
    F: true,
    o: true,
    l: true,
    S: true,
    p: false,
    t: true,
    T: true,
    q: false,
    n: false,
    m: true,
    W: false,
    U: false,
    r: true,
  },
  long: {
    ...COMMON_LONG,
    quiet: [false, "q"],
    "image-opts": [false, "image-opts"],
    "source-image-opts": [false, "image-opts"],
    "force-share": [false, "U"],
    "source-format": [true, "f"],
    "source-cache": [true, "T"],
    snapshot: [true, "l"],
    "source-snapshot": [true, "l"],
    "output-format": [true, "O"],
    "target-format": [true, "O"],
    "output-cache": [true, "t"],
    "target-cache": [true, "t"],
    options: [true, "o"],
    "target-options": [true, "o"],
    backing: [true, "B"],
    "backing-format": [true, "F"],
    "target-image-opts": [false, "target-image-opts"],
    "target-is-zero": [false, "target-is-zero"],
    "sparse-size": [true, "S"],
    bitmaps: [false, "bitmaps"],
    "skip-broken-bitmaps": [false, "skip-broken-bitmaps"],
    rate: [true, "r"],
    parallel: [true, "m"],
    "copy-range-offloading": [false, "C"],
    salvage: [false, "salvage"],
    "oob-writes": [false, "W"],
    progress: [false, "p"],
    compress: [false, "c"],
    "compress-threads": [true, "compress-threads"],
    "compress-level": [true, "compress-level"],
    "no-create": [false, "n"],
  },
};

/** `-l`: an internal snapshot of the source, by name or by `snapshot.id=…,snapshot.name=…`. */
export interface SnapshotRef {
  /** Snapshot ID. */
  id?: string;
  /** Snapshot name (a bare `-l NAME` is an ID or a name). */
  name?: string;
  /** Set for a bare `-l NAME`: `name` is matched as an ID first, then as a name. */
  idOrName?: boolean;
}

/** A parsed `convert`. */
export interface ConvertCommand {
  cmd: "convert";
  /** Source filenames (or `--image-opts` texts) as given, concatenated in order. */
  sources: string[];
  /** Source images: filenames, or parsed specs with `--image-opts`. */
  sourceImages: ImageArg[];
  /** Target filename (or `--target-image-opts` text) as given. */
  target: string;
  /** Target image: the filename, or the parsed spec with `--target-image-opts`. */
  targetImage: ImageArg;
  /** `-f`. */
  srcFormat?: string;
  /** `-O`; `raw` by default unless `--target-image-opts`. */
  targetFormat?: string;
  /** `-o` options in order (repeated `-o` joined with `,`). */
  options: KeyValue[];
  /** The joined `-o` text, if any. */
  optionsString?: string;
  /** `-B`: backing file for the target. */
  backing?: string;
  /** `-F`: format of the backing file. */
  backingFormat?: string;
  /** `-c`. */
  compress: boolean;
  /** `--compress-threads N` (beyond qemu-img): threads compressing clusters; default all cores. */
  compressThreads?: number;
  /** `--compress-level L` (beyond qemu-img): zlib 1..9, zstd 1..22; default the format's. */
  compressLevel?: number;
  /** `-C`: copy offloading. */
  copyRange: boolean;
  /** `-l`. */
  snapshot?: SnapshotRef;
  /** `-S` in bytes: zero runs at least this long stay sparse; 0 disables (default 4096). */
  sparseSize: number;
  /** True if `-S` was given. */
  sparseSizeGiven: boolean;
  /** `-p`. */
  progress: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `-n`: do not create the target. */
  noCreate: boolean;
  /** `--target-is-zero`. */
  targetIsZero: boolean;
  /** `-U`. */
  forceShare: boolean;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** `--target-image-opts`. */
  targetImageOpts: boolean;
  /** `-m` (1…16, default 8). */
  parallel: number;
  /** `-W`: allow out-of-order writes. */
  outOfOrder: boolean;
  /** `-r`: rate limit in bytes per second. */
  rateLimit?: number;
  /** `-T`: source cache mode. */
  srcCache?: string;
  /** `-t`: target cache mode. */
  targetCache?: string;
  /** `--salvage`. */
  salvage: boolean;
  /** `--bitmaps`. */
  bitmaps: boolean;
  /** `--skip-broken-bitmaps`. */
  skipBrokenBitmaps: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

function snapshotRef(v: string): SnapshotRef {
  if (!v.startsWith("snapshot.")) return { name: v, idOrName: true };
  const rec = toRecord(parseKeyValues(v));
  const ref: SnapshotRef = {};
  for (const [k, x] of Object.entries(rec)) {
    if (k === "snapshot.id") ref.id = x;
    else if (k === "snapshot.name") ref.name = x;
    else fail(`Invalid parameter '${k}'\nFailed in parsing snapshot param '${v}'`);
  }
  return ref;
}

/** Build a convert command from parsed arguments, with qemu-img's checks in its order. */
export function buildConvert(p: ParsedArgs, objects: QomObject[]): ConvertCommand | OptionsHelpCommand {
  const optionsString = accumulateOptions(all(p, "o"));
  const S = last(p, "S");
  let sparseSize = 4096;
  if (S !== undefined) {
    sparseSize = cvtnum("buffer size for sparse output", S);
    if (sparseSize % 512 !== 0 || sparseSize > MAX_SPARSE_SIZE) {
      fail(
        "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to " +
          `${MAX_SPARSE_SIZE}. Select 0 to disable sparse detection (fully allocates output).`,
      );
    }
  }
  const m = last(p, "m");
  const parallel = m === undefined ? 8 : cvtnum("number of coroutines", m, 1n, BigInt(MAX_COROUTINES), false);
  const r = last(p, "r");
  const rateLimit = r === undefined ? undefined : cvtnum("rate limit", r);
  const l = last(p, "l");
  const snapshot = l === undefined ? undefined : snapshotRef(l);

  const targetImageOpts = has(p, "target-image-opts");
  const targetFormat = last(p, "O") ?? (targetImageOpts ? undefined : "raw");
  const noCreate = has(p, "n");
  const copyRange = has(p, "C");
  const compress = has(p, "c");
  const salvage = has(p, "salvage");
  const bitmaps = has(p, "bitmaps");
  const skipBrokenBitmaps = has(p, "skip-broken-bitmaps");
  const targetIsZero = has(p, "target-is-zero");
  if (skipBrokenBitmaps && !bitmaps) fail("Use of --skip-broken-bitmaps requires --bitmaps");
  if (compress && copyRange) fail("Cannot enable copy offloading when -c is used");
  const ct = last(p, "compress-threads");
  const cl = last(p, "compress-level");
  if ((ct !== undefined || cl !== undefined) && !compress) {
    fail("--compress-threads and --compress-level require -c");
  }
  if (S !== undefined && copyRange) fail("Cannot enable copy offloading when -S is used");
  if (copyRange && salvage) fail("Cannot use copy offloading in salvaging mode");
  if (targetImageOpts && !noCreate) fail("--target-image-opts requires use of -n flag");
  if (noCreate && optionsString !== undefined) fail("-o has no effect when skipping image creation");
  if (targetIsZero && !noCreate) fail("--target-is-zero requires use of -n flag");

  const n = p.positionals.length;
  const target = n >= 2 ? p.positionals[n - 1] : undefined;
  if (optionsString !== undefined && hasHelpOption(optionsString)) {
    if (targetFormat === undefined) fail("Option help requires a format be specified");
    return target === undefined
      ? { cmd: "options-help", command: "convert", format: targetFormat }
      : { cmd: "options-help", command: "convert", format: targetFormat, filename: target };
  }
  if (target === undefined) fail("Must specify image file name");
  const srcCache = cacheMode(last(p, "T"));
  const targetCache = cacheMode(last(p, "t"), "Invalid cache option");
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const sources = p.positionals.slice(0, -1);
  const c: ConvertCommand = {
    cmd: "convert",
    sources,
    sourceImages: sources.map((s) => imageArg(s, imageOpts)),
    target,
    targetImage: imageArg(target, targetImageOpts),
    options: optionsString === undefined ? [] : parseKeyValues(optionsString),
    compress,
    copyRange,
    sparseSize,
    sparseSizeGiven: S !== undefined,
    progress: has(p, "p"),
    quiet: has(p, "q"),
    noCreate,
    targetIsZero,
    forceShare: has(p, "U"),
    imageOpts,
    targetImageOpts,
    parallel,
    outOfOrder: has(p, "W"),
    salvage,
    bitmaps,
    skipBrokenBitmaps,
    objects,
  };
  if (ct !== undefined) c.compressThreads = cvtnum("number of compression threads", ct, 1n, 256n, false);
  if (cl !== undefined) c.compressLevel = cvtnum("compression level", cl, 1n, 22n, false);
  const f = last(p, "f");
  if (f !== undefined) c.srcFormat = f;
  if (targetFormat !== undefined) c.targetFormat = targetFormat;
  if (optionsString !== undefined) c.optionsString = optionsString;
  const B = last(p, "B");
  if (B !== undefined) c.backing = B;
  const F = last(p, "F");
  if (F !== undefined) c.backingFormat = F;
  if (snapshot !== undefined) c.snapshot = snapshot;
  if (rateLimit !== undefined) c.rateLimit = rateLimit;
  if (srcCache !== undefined) c.srcCache = srcCache;
  if (targetCache !== undefined) c.targetCache = targetCache;
  return c;
}
