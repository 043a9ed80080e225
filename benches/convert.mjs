#!/usr/bin/env node
/**
 * Side-by-side convert benchmark: qimg vs qemu-img on the same generated workload, in one run.
 * Paths: raw→qcow2, qcow2→raw, qcow2→qcow2. Prints seconds, MB/s, peak RSS and the ratio
 * qimg/qemu-img for each path (target ≤ 1.0, RSS ≤ 256 MiB). Not a test: nothing is asserted.
 *
 * Usage: node benches/convert.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { makeWorkload } from "./workload.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const units = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
const sizeArg = opt("size", "4G");
const size = Number.parseInt(sizeArg, 10) * (units[sizeArg.slice(-1).toUpperCase()] ?? 1);
const dir = resolve(opt("dir", join(here, "work")));
const runs = Number(opt("runs", "1"));
const qimg = [process.execPath, join(here, "..", "dist", "cli", "main.js")];
mkdirSync(dir, { recursive: true });

/** Run a command under GNU time; return seconds and peak RSS (KiB). */
function timed(argv) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8" });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  const rss = Number(r.stderr.trim().split("\n").pop());
  return { secs, rss };
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

const src = makeWorkload(join(dir, "workload.raw"), size);
const qref = join(dir, "ref.qcow2");
execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", src, qref]);
const paths = [
  { name: "raw→qcow2", f: "raw", O: "qcow2", in: src },
  { name: "qcow2→raw", f: "qcow2", O: "raw", in: qref },
  { name: "qcow2→qcow2", f: "qcow2", O: "qcow2", in: qref },
];
const mb = size / 1e6;
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
console.log("path          tool      seconds   MB/s    peak RSS MiB   ratio qimg/qemu-img");
for (const p of paths) {
  const out = join(dir, `out.${p.O}`);
  const q = best(["qemu-img", "convert", "-f", p.f, "-O", p.O, p.in, out], out);
  const m = best([...qimg, "convert", "-f", p.f, "-O", p.O, p.in, out], out);
  const cmp = spawnSync("qemu-img", ["compare", "-f", p.f, "-F", p.O, p.in, out]);
  const fmt = (t, r) =>
    `${t.padEnd(9)} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(10)}`;
  console.log(`${p.name.padEnd(13)} ${fmt("qemu-img", q)}`);
  console.log(
    `${"".padEnd(13)} ${fmt("qimg", m)}   ${(m.secs / q.secs).toFixed(2)}${cmp.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`,
  );
  rmSync(out, { force: true });
}
