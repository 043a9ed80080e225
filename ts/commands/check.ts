/** `qimg check`: qemu-img's report, JSON fields and exit codes (0, 1, 2, 3, 63). */
import { isQimgError } from "../errors.js";
import type { ImageOptions } from "../graph/spec.js";
import { type CheckResult, check, checkExitCode } from "../jobs/check.js";
import { type Io, printfFixed2, qemuJson } from "./output.js";

/** What the `check` command needs. */
export interface CheckArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `--output`. */
  output: "human" | "json";
  /** `-r`. */
  repair?: "leaks" | "all";
  /** `-U`. */
  forceShare: boolean;
  /** `-q`. */
  quiet: boolean;
}

function summary(r: CheckResult): string {
  const l: string[] = [];
  if (!r.corruptions && !r.leaks && !r["check-errors"]) l.push("No errors were found on the image.");
  else {
    if (r.corruptions) {
      l.push(`\n${r.corruptions} errors were found on the image.`);
      l.push("Data may be corrupted, or further writes to the image may corrupt it.");
    }
    if (r.leaks) {
      l.push(`\n${r.leaks} leaked clusters were found on the image.`);
      l.push("This means waste of disk space, but no harm to data.");
    }
    if (r["check-errors"]) l.push(`\n${r["check-errors"]} internal errors have occurred during the check.`);
  }
  const total = r["total-clusters"] ?? 0;
  const alloc = r["allocated-clusters"] ?? 0;
  if (total && alloc) {
    const pct = (n: number) => printfFixed2((100 * n) / total);
    const fr = printfFixed2((100 * (r["fragmented-clusters"] ?? 0)) / alloc);
    const co = printfFixed2((100 * (r["compressed-clusters"] ?? 0)) / alloc);
    l.push(`${alloc}/${total} = ${pct(alloc)}% allocated, ${fr}% fragmented, ${co}% compressed clusters`);
  }
  if (r["image-end-offset"]) l.push(`Image end offset: ${r["image-end-offset"]}`);
  return `${l.join("\n")}\n`;
}

/** Run `check`; returns qemu-img's exit code. */
export async function checkCommand(a: CheckArgs, io: Io): Promise<number> {
  let outcome: Awaited<ReturnType<typeof check>>;
  try {
    outcome = await check(a.image, { format: a.format, repair: a.repair, forceShare: a.forceShare });
  } catch (e) {
    if (isQimgError(e, "ERR_QIMG_UNSUPPORTED") && /does not support checks/.test(e.message)) {
      io.err(`qimg: ${e.message}\n`);
      return 63;
    }
    throw e;
  }
  const { result, messages, repaired } = outcome;
  for (const m of messages) io.err(`${m}\n`);
  if (a.output === "json") {
    io.out(`${qemuJson(result)}\n`);
  } else if (!a.quiet) {
    if (repaired && (repaired.leaksFixed || repaired.corruptionsFixed)) {
      io.out(
        "The following inconsistencies were found and repaired:\n\n" +
          `    ${repaired.leaksFixed} leaked clusters\n    ${repaired.corruptionsFixed} corruptions\n\n` +
          "Double checking the fixed image now...\n",
      );
    }
    io.out(summary(result));
  }
  return checkExitCode(result);
}
