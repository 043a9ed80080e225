#!/usr/bin/env node
/**
 * Side-by-side vdi/vpc convert benchmark: qimg vs qemu-img on the shared generated workload, in
 * one run. Paths: raw→vdi, vdi→raw, raw→vpc, vpc→raw (dynamic images; the source of each
 * fmt→raw path is made by qemu-img). Prints seconds, MB/s, peak RSS and the ratio qimg/qemu-img
 * (target ≤ 1.0), also against qemu-img followed by `sync`, since qimg's output is durable when
 * it exits and qemu-img's is not. Not a test: nothing is asserted, but a differing output is
 * flagged.
 *
 * Usage: node benches/vdi-vpc.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, convertTable, makeWorkload } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
const src = makeWorkload(join(dir, "workload.raw"), size);
const paths = [];
for (const fmt of ["vdi", "vpc"]) {
  const ref = join(dir, `ref.${fmt}`);
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", fmt, src, ref]);
  paths.push({ name: `raw→${fmt}`, f: "raw", O: fmt, in: src });
  paths.push({ name: `${fmt}→raw`, f: fmt, O: "raw", in: ref });
}
convertTable(paths, { src, dir, size, runs });
for (const fmt of ["vdi", "vpc"]) rmSync(join(dir, `ref.${fmt}`), { force: true });
