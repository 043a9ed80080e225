/** `qimg measure`: qemu-img's "required size" / "fully allocated size" lines or JSON object. */
import { QimgError } from "../errors.js";
import type { ImageOptions } from "../graph/spec.js";
import { type MeasureResult, measure } from "../jobs/measure.js";
import type { Io } from "./output.js";

/** What the `measure` command needs. */
export interface MeasureArgs {
  /** The source image, or `--size` in bytes. */
  source: string | ImageOptions | bigint;
  /** `-f`. */
  format?: string;
  /** `-O`. */
  targetFormat: string;
  /** `-o`. */
  options: Record<string, string>;
  /** `-l`. */
  snapshot?: string;
  /** `--output`. */
  output: "human" | "json";
  /** `-U`. */
  forceShare: boolean;
}

/** qemu-img's JSON layout for `BlockMeasureInfo` (bigint values printed exactly). */
export function measureJson(r: MeasureResult): string {
  const lines: string[] = [];
  if (r.bitmaps !== undefined) lines.push(`    "bitmaps": ${r.bitmaps}`);
  lines.push(`    "required": ${r.required}`, `    "fully-allocated": ${r.fullyAllocated}`);
  return `{\n${lines.join(",\n")}\n}\n`;
}

/** Run `measure`; returns the exit code. */
export async function measureCommand(a: MeasureArgs, io: Io): Promise<number> {
  if (a.snapshot !== undefined)
    throw new QimgError("ERR_QIMG_UNSUPPORTED", "measure -l (internal snapshots) is not supported yet");
  let r: MeasureResult;
  try {
    r = await measure(a.source, {
      format: a.format,
      targetFormat: a.targetFormat,
      options: a.options,
      forceShare: a.forceShare,
    });
  } catch (e) {
    // qemu-img reports a bad -o list as two errors: the option's, then "Invalid options for …".
    const m = e instanceof Error ? /^([\s\S]*)\n(Invalid options for file format .*)$/.exec(e.message) : null;
    if (!m) throw e;
    io.err(`qimg: ${m[1]}\nqimg: ${m[2]}\n`);
    return 1;
  }
  if (a.output === "json") {
    io.out(measureJson(r));
  } else {
    io.out(`required size: ${r.required}\nfully allocated size: ${r.fullyAllocated}\n`);
    if (r.bitmaps !== undefined) io.out(`bitmaps size: ${r.bitmaps}\n`);
  }
  return 0;
}
