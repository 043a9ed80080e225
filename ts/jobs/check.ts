/** `check()`: qemu-img's `ImageCheck`, with its JSON fields and exit-code meaning. */
import { QimgError } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { callNative, type NativeCheck } from "../native.js";
import { getFormat } from "../registry/index.js";

/** `qemu-img check --output=json`. Zero-valued optional counters are omitted, as qemu-img does. */
export interface CheckResult {
  /** End of used host space. */
  "image-end-offset"?: number;
  /** Clusters covering the virtual disk. */
  "total-clusters"?: number;
  /** Internal errors during the check. */
  "check-errors": number;
  /** Leaked clusters left. */
  leaks?: number;
  /** Corruptions left. */
  corruptions?: number;
  /** Leaks fixed. */
  "leaks-fixed"?: number;
  /** Corruptions fixed. */
  "corruptions-fixed"?: number;
  /** Allocated clusters. */
  "allocated-clusters"?: number;
  /** Fragmented clusters. */
  "fragmented-clusters"?: number;
  /** Compressed clusters. */
  "compressed-clusters"?: number;
  /** File name as given. */
  filename: string;
  /** Format. */
  format: string;
}

/** Options of {@link check}. */
export interface CheckOptions extends Pick<OpenOptions, "format" | "forceShare" | "locking"> {
  /** `-r leaks|all`: repair (opens the image read-write). */
  repair?: "leaks" | "all";
}

/** A finished check: the JSON result plus the findings and the fixes made. */
export interface CheckOutcome {
  /** The qemu-img-shaped result (after repair, the re-check's). */
  result: CheckResult;
  /** Findings, one line each ("Leaked cluster 5 refcount=1 reference=0"). */
  messages: string[];
  /** With repair: what the first pass found and fixed. */
  repaired?: { leaksFixed: number; corruptionsFixed: number };
}

function shape(c: NativeCheck, filename: string, format: string): CheckResult {
  const r: CheckResult = { "check-errors": c.checkErrors, filename, format };
  const out: Record<string, number | string> = {};
  const put = (k: string, v: number | null | undefined) => {
    if (v) out[k] = v;
  };
  put("image-end-offset", c.imageEndOffset);
  put("total-clusters", c.totalClusters);
  // QEMU prints its QDict in hash-bucket order: corruptions before check-errors, leaks after.
  put("corruptions", c.corruptions);
  put("corruptions-fixed", c.corruptionsFixed);
  out["check-errors"] = c.checkErrors;
  put("leaks", c.leaks);
  put("leaks-fixed", c.leaksFixed);
  put("allocated-clusters", c.allocatedClusters);
  put("fragmented-clusters", c.fragmentedClusters);
  put("compressed-clusters", c.compressedClusters);
  return { ...out, ...r, "check-errors": c.checkErrors } as CheckResult;
}

/** Check an image (and with `repair`, fix it and check again). */
export async function check(spec: string | ImageOptions, opts: CheckOptions = {}): Promise<CheckOutcome> {
  const img = await open(spec, {
    format: opts.format,
    readOnly: !opts.repair,
    forceShare: opts.forceShare,
    locking: opts.locking,
    noBacking: true,
  });
  try {
    if (!getFormat(img.format).supportsCheck) {
      throw new QimgError("ERR_QIMG_UNSUPPORTED", `This image format does not support checks`, {
        path: img.filename,
      });
    }
    const first = await callNative(() => img.native.check(opts.repair ?? "none"));
    if (!opts.repair) return { result: shape(first, img.filename, img.format), messages: first.messages };
    const again = await callNative(() => img.native.check("none"));
    const result = shape(again, img.filename, img.format);
    if (first.leaksFixed) result["leaks-fixed"] = first.leaksFixed;
    if (first.corruptionsFixed) result["corruptions-fixed"] = first.corruptionsFixed;
    return {
      result,
      messages: [...first.messages, ...again.messages],
      repaired: { leaksFixed: first.leaksFixed, corruptionsFixed: first.corruptionsFixed },
    };
  } finally {
    await img.close();
  }
}

/** qemu-img check's exit code for a result: 0 clean, 2 corruptions, 3 leaks only (1 and 63 are errors). */
export function checkExitCode(r: CheckResult): number {
  if (r["check-errors"]) return 1;
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}
