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
import { benchArgs, makeWorkload, qimgCli, settle } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
/** Only the paths whose name contains this (e.g. `parallels`, `cloop`, `bochs`). */
const only = opt("only", "");

/** Run under GNU time; seconds, seconds with a trailing sync, peak RSS (KiB). */
function timed(argv) {
  settle();
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8" });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  spawnSync("sync");
  const synced = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  return { secs, synced, rss: Number(r.stderr.trim().split("\n").pop()) };
}

function best(argv, out) {
  let b;
  for (let i = 0; i < runs; i++) {
    rmSync(out, { force: true });
    const r = timed(argv);
    if (!b || r.secs < b.secs) b = r;
  }
  return b;
}

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

const mb = size / 1e6;
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
console.log("path           tool      seconds   MB/s  peak RSS MiB  +sync s   ratio vs qemu-img / +sync");
for (const p of paths.filter((x) => x.name.includes(only))) {
  const out = join(dir, `out.${p.O}`);
  const q = best(["qemu-img", "convert", "-f", p.f, "-O", p.O, p.in, out], out);
  const m = best([...qimgCli, "convert", "-f", p.f, "-O", p.O, p.in, out], out);
  const cmp = spawnSync("qemu-img", ["compare", "-f", p.f, "-F", p.O, p.in, out]);
  const fmt = (t, r) =>
    `${t.padEnd(9)} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(12)} ${r.synced.toFixed(2).padStart(8)}`;
  console.log(`${p.name.padEnd(14)} ${fmt("qemu-img", q)}`);
  console.log(
    `${"".padEnd(14)} ${fmt("qimg", m)}   ${(m.secs / q.secs).toFixed(2)} / ${(m.secs / q.synced).toFixed(2)}${cmp.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`,
  );
  rmSync(out, { force: true });
}
