#!/usr/bin/env node
/**
 * Side-by-side convert benchmark: qimg vs qemu-img on the same generated workload, in one run.
 * Paths: raw→qcow2, qcow2→raw, qcow2→qcow2, raw→raw; qimg also with `-t none` (O_DIRECT target).
 * Prints seconds, MB/s, peak RSS and the ratio
 * qimg/qemu-img for each path (target ≤ 1.0, RSS ≤ 256 MiB). Not a test: nothing is asserted.
 *
 * qimg flushes its target before exiting (a job exits 0 only after its output is durable);
 * qemu-img convert does not (no fdatasync is issued; the data sits in the page cache). So each
 * qemu-img run is also timed with a following `sync`, the durable equivalent, and both ratios
 * are printed. Every run starts after a `sync` (and a page-cache drop when permitted) so no
 * run pays for another's writeback.
 *
 * Usage: node benches/convert.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { benchArgs, convertTable, makeWorkload } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
const src = makeWorkload(join(dir, "workload.raw"), size);
const qref = join(dir, "ref.qcow2");
execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", src, qref]);
convertTable(
  [
    { name: "raw→qcow2", f: "raw", O: "qcow2", in: src },
    { name: "qcow2→raw", f: "qcow2", O: "raw", in: qref },
    { name: "qcow2→qcow2", f: "qcow2", O: "qcow2", in: qref },
    { name: "raw→raw", f: "raw", O: "raw", in: src },
  ],
  { src, dir, size, runs, variants: [{ label: "qimg -t none", args: ["-t", "none"] }] },
);
