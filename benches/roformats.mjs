#!/usr/bin/env node
/**
 * Side-by-side benchmark for the issue-7 formats: qimg vs qemu-img on the same workload, in one
 * run. Paths: raw→parallels and parallels→raw, and, when their tools are installed, cloop→raw
 * (image made by create_compressed_fs) and bochs→raw (image made by bximage). Prints seconds,
 * MB/s, peak RSS and the ratio qimg/qemu-img (qemu-img also timed with a following `sync`, as
 * qimg flushes its target before exiting). Not a test: nothing is asserted.
 *
 * Usage: node benches/roformats.mjs [--size 4G] [--dir benches/work] [--runs 1] [--only parallels]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, convertTable, makeWorkload } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
/** Only the paths whose name contains this (e.g. `parallels`, `cloop`, `bochs`). */
const only = opt("only", "");

const has = (cmd) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
const src = makeWorkload(join(dir, "workload.raw"), size);
const prl = join(dir, "ref.parallels");
execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "parallels", src, prl]);
const paths = [
  { name: "raw→parallels", f: "raw", O: "parallels", in: src },
  { name: "parallels→raw", f: "parallels", O: "raw", in: prl },
];
if (only && !"cloop".includes(only)) {
  // skipped by --only
} else if (has("create_compressed_fs")) {
  const cl = join(dir, "ref.cloop");
  execFileSync("create_compressed_fs", ["-q", "-B", "65536", src, cl], { stdio: "ignore" });
  paths.push({ name: "cloop→raw", f: "cloop", O: "raw", in: cl });
} else console.log("cloop: create_compressed_fs missing (apt-get install cloop-utils), skipped");
if (only && !"bochs".includes(only)) {
  // skipped by --only
} else if (has("bximage")) {
  const bo = join(dir, "ref.bochs");
  rmSync(bo, { force: true });
  execFileSync("bximage", ["-func=convert", "-imgmode=growing", "-q", src, bo], { stdio: "ignore" });
  paths.push({ name: "bochs→raw", f: "bochs", O: "raw", in: bo });
} else console.log("bochs: bximage missing (apt-get install bximage), skipped");

convertTable(
  paths.filter((x) => x.name.includes(only)),
  { src, dir, size, runs },
);
