#!/usr/bin/env node
/**
 * Side-by-side convert benchmark for qed and qcow (v1): raw→fmt and fmt→raw, qimg vs qemu-img
 * on the same generated workload in one run. Prints seconds, MB/s, peak RSS and the ratio
 * qimg/qemu-img per path (target ≤ 1.0), plus the ratio against qemu-img followed by `sync`
 * (qimg's jobs end durable; qemu-img convert does not flush). Not a test: nothing is asserted
 * except that each output compares equal to its input.
 *
 * Usage: node benches/qed-qcow.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, convertTable, makeWorkload } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
const src = makeWorkload(join(dir, "workload.raw"), size);
const paths = [];
for (const fmt of ["qed", "qcow"]) {
  const ref = join(dir, `ref.${fmt}`);
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", fmt, src, ref]);
  paths.push({ name: `raw→${fmt}`, f: "raw", O: fmt, in: src });
  paths.push({ name: `${fmt}→raw`, f: fmt, O: "raw", in: ref });
}
convertTable(paths, { src, dir, size, runs });
for (const fmt of ["qed", "qcow"]) rmSync(join(dir, `ref.${fmt}`), { force: true });
