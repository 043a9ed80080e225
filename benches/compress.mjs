#!/usr/bin/env node
/**
 * Side-by-side compressed convert benchmark (qcow2-parity issue): on the same generated workload,
 * `convert -c` to qcow2 with zlib and zstd by qemu-img (default, and `-W -m 16`) and by qimg, then
 * back to raw (decompression, also timed as qemu-img followed by sync, since qimg's time includes
 * flushing its output). Prints seconds, output sizes and ratios. Not a test.
 *
 * Usage: node benches/compress.mjs [--size 4G] [--dir benches/work]
 */
import { spawnSync } from "node:child_process";
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, makeWorkload, qimgCli, settle } from "./workload.mjs";

const { size, dir } = benchArgs();
const qimg = qimgCli;

/** Time one command (after settling the page cache); throws on failure. */
function time(argv) {
  settle();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const src = makeWorkload(join(dir, "workload.raw"), size);
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB)`);
for (const type of ["zlib", "zstd"]) {
  const o = ["-o", `compression_type=${type}`];
  const outs = {
    q: join(dir, `c-${type}-qemu.qcow2`),
    w: join(dir, `c-${type}-qemu-w.qcow2`),
    m: join(dir, `c-${type}-qimg.qcow2`),
  };
  for (const f of Object.values(outs)) rmSync(f, { force: true });
  const tq = time(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", ...o, src, outs.q]);
  const tw = time([
    "qemu-img",
    "convert",
    "-W",
    "-m",
    "16",
    "-c",
    "-f",
    "raw",
    "-O",
    "qcow2",
    ...o,
    src,
    outs.w,
  ]);
  const tm = time([...qimg, "convert", "-c", "-f", "raw", "-O", "qcow2", ...o, src, outs.m]);
  const same = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", src, outs.m]).status === 0;
  const sq = statSync(outs.q).size;
  const sm = statSync(outs.m).size;
  console.log(
    `\n${type} compress: qemu-img ${tq.toFixed(2)} s, qemu-img -W -m 16 ${tw.toFixed(2)} s, qimg ${tm.toFixed(2)} s`,
  );
  console.log(
    `  ratio qimg/qemu-img ${(tm / tq).toFixed(2)}, qimg/(-W -m 16) ${(tm / tw).toFixed(2)}${same ? "" : "  (OUTPUT DIFFERS!)"}`,
  );
  console.log(`  output size qemu-img ${sq}, qimg ${sm} (${(((sm - sq) / sq) * 100).toFixed(1)}%)`);
  // Decompression: each tool reads qemu-img's compressed image back to raw.
  const back = join(dir, `c-${type}.raw`);
  rmSync(back, { force: true });
  const dq = time(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", outs.q, back]);
  rmSync(back, { force: true });
  // qemu-img convert never syncs its output; qimg exits only after flushing it. The same work
  // made durable: qemu-img then sync(1).
  const ds = time(["sh", "-c", `qemu-img convert -f qcow2 -O raw '${outs.q}' '${back}' && sync`]);
  rmSync(back, { force: true });
  const dm = time([...qimg, "convert", "-f", "qcow2", "-O", "raw", outs.q, back]);
  rmSync(back, { force: true });
  console.log(
    `${type} decompress (qemu-img's image → raw): qemu-img ${dq.toFixed(2)} s, qemu-img + sync ${ds.toFixed(2)} s, qimg ${dm.toFixed(2)} s`,
  );
  console.log(
    `  ratio qimg/qemu-img ${(dm / dq).toFixed(2)}, qimg/(qemu-img + sync) ${(dm / ds).toFixed(2)}`,
  );
  for (const f of Object.values(outs)) rmSync(f, { force: true });
}
