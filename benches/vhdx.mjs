#!/usr/bin/env node
/**
 * Side-by-side vhdx convert benchmark: qimg vs qemu-img on the shared generated workload, in one
 * run. Paths: raw→vhdx and vhdx→raw (dynamic, QEMU's default options; the source of vhdx→raw is
 * made by qemu-img). Prints seconds, MB/s, peak RSS and the ratio qimg/qemu-img
 * (target ≤ 1.0), also against qemu-img followed by `sync`, since qimg's output is durable when
 * it exits and qemu-img's is not. Not a test: nothing is asserted, but a differing output is
 * flagged.
 *
 * Usage: node benches/vhdx.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, makeWorkload, qimgCli, settle } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));

/** Run a command under GNU time; seconds (and with a trailing sync) and peak RSS (KiB). */
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

/** Best of `runs` timings of `argv`, removing `out` before each. */
function best(argv, out) {
  let b;
  for (let i = 0; i < runs; i++) {
    rmSync(out, { force: true });
    const r = timed(argv);
    if (!b || r.secs < b.secs) b = r;
  }
  return b;
}

const src = makeWorkload(join(dir, "workload.raw"), size);
const paths = [];
for (const fmt of ["vhdx"]) {
  const ref = join(dir, `ref.${fmt}`);
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", fmt, src, ref]);
  paths.push({ name: `raw→${fmt}`, f: "raw", O: fmt, in: src });
  paths.push({ name: `${fmt}→raw`, f: fmt, O: "raw", in: ref, ref });
}
const mb = size / 1e6;
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
console.log(
  "path        tool      seconds   MB/s  peak RSS MiB  +sync s   ratio vs qemu-img / vs qemu-img+sync",
);
for (const p of paths) {
  const out = join(dir, `out.${p.O}`);
  const q = best(["qemu-img", "convert", "-f", p.f, "-O", p.O, p.in, out], out);
  const m = best([...qimgCli, "convert", "-f", p.f, "-O", p.O, p.in, out], out);
  const cmp = spawnSync("qemu-img", ["compare", "-f", p.f, "-F", p.O, p.in, out]);
  const fmt = (t, r) =>
    `${t.padEnd(9)} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(12)} ${r.synced.toFixed(2).padStart(8)}`;
  const ratio = `${(m.secs / q.secs).toFixed(2)} / ${(m.secs / q.synced).toFixed(2)}`;
  console.log(`${p.name.padEnd(11)} ${fmt("qemu-img", q)}`);
  console.log(
    `${"".padEnd(11)} ${fmt("qimg", m)}   ${ratio}${cmp.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`,
  );
  rmSync(out, { force: true });
  if (p.ref) rmSync(p.ref, { force: true });
}
