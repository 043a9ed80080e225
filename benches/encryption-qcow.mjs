#!/usr/bin/env node
/**
 * Side-by-side convert benchmark for encrypted qcow2 and qcow: qimg vs qemu-img on the shared
 * generated workload, in one run. Paths: raw→qcow2+luks (aes-256-xts-plain64), qcow2+luks→raw,
 * raw→qcow2+aes (legacy), qcow2+aes→raw, raw→qcow+aes, qcow+aes→raw (each fmt→raw source made by
 * qemu-img). PBKDF2 runs with `encrypt.iter-time=10` so the figures measure the data path.
 * Prints seconds, MB/s, peak RSS and the ratio qimg/qemu-img (issue #5's target for LUKS convert:
 * ≤ 0.25), also against qemu-img followed by `sync`. Not a test: nothing is asserted, but a
 * differing output is flagged.
 *
 * Usage: node benches/encryption-qcow.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, makeWorkload, qimgCli, settle } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
/** A bench-only passphrase (the benchmark never prints it). */
const OBJ = "secret,id=sec0,data=bench-passphrase";

/** Run a command under GNU time; seconds (and with a trailing sync) and peak RSS (KiB). */
function timed(argv) {
  settle();
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/time", ["-f", "%M", ...argv], { encoding: "utf8" });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  spawnSync("sync");
  const synced = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv[0]} ${argv[1]} failed: ${r.stderr.split("\n")[0]}`);
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

const kinds = [
  { name: "qcow2+luks", fmt: "qcow2", o: "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10" },
  { name: "qcow2+aes", fmt: "qcow2", o: "encrypt.format=aes,encrypt.key-secret=sec0" },
  { name: "qcow+aes", fmt: "qcow", o: "encrypt.format=aes,encrypt.key-secret=sec0" },
];
const src = makeWorkload(join(dir, "workload.raw"), size);
const mb = size / 1e6;
const spec = (fmt, f) => `driver=${fmt},file.filename=${f},encrypt.key-secret=sec0`;
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
console.log("path              tool      seconds   MB/s  peak RSS MiB  +sync s   ratio vs qemu-img / +sync");
const fmtRow = (t, r) =>
  `${t.padEnd(9)} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(12)} ${r.synced.toFixed(2).padStart(8)}`;
for (const k of kinds) {
  const ref = join(dir, `ref.${k.name}`);
  execFileSync("qemu-img", ["convert", "--object", OBJ, "-f", "raw", "-O", k.fmt, "-o", k.o, src, ref]);
  const out = join(dir, `out.${k.name}`);
  const rawOut = join(dir, "out.raw");
  const rows = [
    {
      name: `raw→${k.name}`,
      argv: ["convert", "--object", OBJ, "-f", "raw", "-O", k.fmt, "-o", k.o, src, out],
      out,
      cmp: ["compare", "--object", OBJ, "--image-opts", `driver=raw,file.filename=${src}`, spec(k.fmt, out)],
    },
    {
      name: `${k.name}→raw`,
      argv: ["convert", "--object", OBJ, "--image-opts", spec(k.fmt, ref), "-O", "raw", rawOut],
      out: rawOut,
      cmp: ["compare", "-f", "raw", "-F", "raw", src, rawOut],
    },
  ];
  for (const p of rows) {
    const q = best(["qemu-img", ...p.argv], p.out);
    const m = best([...qimgCli, ...p.argv], p.out);
    const cmp = spawnSync("qemu-img", p.cmp);
    const ratio = `${(m.secs / q.secs).toFixed(2)} / ${(m.secs / q.synced).toFixed(2)}`;
    console.log(`${p.name.padEnd(17)} ${fmtRow("qemu-img", q)}`);
    console.log(
      `${"".padEnd(17)} ${fmtRow("qimg", m)}   ${ratio}${cmp.status === 0 ? "" : "  (OUTPUT DIFFERS!)"}`,
    );
    rmSync(p.out, { force: true });
  }
  rmSync(ref, { force: true });
}
