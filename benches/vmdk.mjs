#!/usr/bin/env node
/**
 * Side-by-side vmdk streamOptimized benchmark: `convert -O vmdk -o subformat=streamOptimized`
 * from the shared generated raw workload, qimg vs qemu-img in one run (qimg deflates grains on
 * every core; qemu-img on one). Also reads the result back (streamOptimized→raw). Prints seconds,
 * MB/s, peak RSS, output size and the ratio qimg/qemu-img (target ≤ 0.4 for raw→stream). Not a
 * test: nothing is asserted, but a differing output is flagged.
 *
 * Usage: node benches/vmdk.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { spawnSync } from "node:child_process";
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, makeWorkload, qimgCli, settle } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));

/** Run a command under GNU time; seconds and peak RSS (KiB). */
function timed(argv) {
  settle();
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8" });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  return { secs, rss: Number(r.stderr.trim().split("\n").pop()) };
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
const mb = size / 1e6;
const so = ["-O", "vmdk", "-o", "subformat=streamOptimized"];
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
console.log("path          tool      seconds   MB/s  peak RSS MiB  output MiB  ratio vs qemu-img");
const line = (name, tool, r, bytes, extra = "") =>
  console.log(
    `${name.padEnd(13)} ${tool.padEnd(9)} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(12)} ${(bytes / 2 ** 20).toFixed(1).padStart(11)}  ${extra}`,
  );
const qOut = join(dir, "q.vmdk");
const mOut = join(dir, "m.vmdk");
const q = best(["qemu-img", "convert", "-f", "raw", ...so, src, qOut], qOut);
const m = best([...qimgCli, "convert", "-f", "raw", ...so, src, mOut], mOut);
const cmp = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", "vmdk", src, mOut]);
line("raw→stream", "qemu-img", q, statSync(qOut).size);
line(
  "",
  "qimg",
  m,
  statSync(mOut).size,
  `${(m.secs / q.secs).toFixed(2)}${cmp.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`,
);
const raw = join(dir, "back.raw");
const qr = best(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", qOut, raw], raw);
const mr = best([...qimgCli, "convert", "-f", "vmdk", "-O", "raw", qOut, raw], raw);
line("stream→raw", "qemu-img", qr, size);
line("", "qimg", mr, size, (mr.secs / qr.secs).toFixed(2));
for (const f of [qOut, mOut, raw]) rmSync(f, { force: true });
