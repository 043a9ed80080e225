/** qemu-img's `-p` progress line: "    (12.34/100%)" rewritten in place on stdout. */
import type { Job } from "../jobs/job.js";
import type { Io } from "./output.js";

/** Show a job's progress as qemu-img does, finishing at 100%. */
export function progressBar<T>(job: Job<T>, io: Io): void {
  let last = -1;
  const show = (pct: number) => {
    if (pct - last < 1 && pct < 100) return;
    last = pct;
    io.out(`    (${pct.toFixed(2)}/100%)\r`);
  };
  show(0);
  job.on("progress", ({ done, total }) => show(total ? (100 * done) / total : 100));
  job.result.then(
    () => {
      show(100);
      io.out("\n");
    },
    () => io.out("\n"),
  );
}
