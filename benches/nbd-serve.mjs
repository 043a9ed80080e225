#!/usr/bin/env node
/**
 * Side-by-side NBD server benchmark: `qimg serve` vs qemu-nbd exporting the same image, in one
 * run, with the same clients. Sources: a plain qcow2 and a zlib-compressed qcow2 of the shared
 * workload (made by qemu-img). Read paths: `nbdcopy URI null:` (server throughput alone, 4
 * connections as nbdcopy chooses with multi-conn) and `qemu-img convert nbd://… → raw`. Write
 * path: `nbdcopy workload.raw URI` into a fresh qcow2 served read-write (then flushed and
 * closed). Prints seconds, MB/s and the ratio qimg/qemu-nbd (target ≤ 1.0). Not a test: nothing
 * is asserted, but a differing output is flagged.
 *
 * Usage: node benches/nbd-serve.mjs [--size 4G] [--dir benches/work] [--runs 1]
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, makeWorkload, qimgCli, settle } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
const sock = join(dir, `serve-${process.pid}.sock`);

/** Start a server on `sock` and wait until it accepts connections. */
async function start(argv) {
  rmSync(sock, { force: true });
  const p = spawn(argv[0], argv.slice(1), { stdio: "ignore" });
  const t0 = Date.now();
  for (;;) {
    if (existsSync(sock) && spawnSync("nbdinfo", ["--size", uri()]).status === 0) return p;
    if (p.exitCode !== null || Date.now() - t0 > 20_000) throw new Error(`${argv[0]} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stop(p) {
  const done = new Promise((r) => p.on("exit", r));
  p.kill("SIGTERM");
  await done;
}

const uri = () => `nbd+unix:///?socket=${sock}`;

function timed(argv) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const servers = {
  "qemu-nbd": (fmt, img, ro) => [
    "qemu-nbd",
    ...(ro ? ["-r"] : []),
    "-t",
    "-e",
    "8",
    "-f",
    fmt,
    "-k",
    sock,
    img,
  ],
  qimg: (fmt, img, ro) => [
    ...qimgCli,
    "serve",
    ...(ro ? ["-r"] : []),
    "-t",
    "-e",
    "8",
    "-f",
    fmt,
    "-k",
    sock,
    img,
  ],
};

const src = makeWorkload(join(dir, "workload.raw"), size);
const plain = join(dir, "serve-plain.qcow2");
const zlib = join(dir, "serve-zlib.qcow2");
execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", src, plain]);
execFileSync("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", src, zlib]);
const out = join(dir, "serve-out.raw");
const mb = size / 1e6;
console.log(`workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}`);
console.log("path                            server      seconds   MB/s   ratio qimg/qemu-nbd");
const fmtRow = (path, who, s, ratio = "") =>
  console.log(
    `${path.padEnd(31)} ${who.padEnd(10)} ${s.toFixed(2).padStart(8)} ${(mb / s).toFixed(0).padStart(6)}   ${ratio}`,
  );

const cases = [
  { name: "plain qcow2 → nbdcopy null:", img: plain, client: () => ["nbdcopy", uri(), "null:"] },
  { name: "zlib qcow2 → nbdcopy null:", img: zlib, client: () => ["nbdcopy", uri(), "null:"] },
  {
    name: "plain qcow2 → qemu-img convert",
    img: plain,
    client: () => ["qemu-img", "convert", "-f", "raw", "-O", "raw", uri(), out],
    check: true,
  },
  {
    name: "zlib qcow2 → qemu-img convert",
    img: zlib,
    client: () => ["qemu-img", "convert", "-f", "raw", "-O", "raw", uri(), out],
    check: true,
  },
];
for (const c of cases) {
  const t = {};
  let differs = false;
  for (const who of Object.keys(servers)) {
    for (let i = 0; i < runs; i++) {
      settle();
      const p = await start(servers[who]("qcow2", c.img, true));
      rmSync(out, { force: true });
      const s = timed(c.client());
      await stop(p);
      if (c.check && spawnSync("cmp", ["-s", src, out]).status !== 0) differs = true;
      t[who] = Math.min(t[who] ?? Infinity, s);
    }
  }
  fmtRow(c.name, "qemu-nbd", t["qemu-nbd"]);
  fmtRow("", "qimg", t.qimg, `${(t.qimg / t["qemu-nbd"]).toFixed(2)}${differs ? "  (OUTPUT DIFFERS!)" : ""}`);
}
// Writes: nbdcopy the workload into a fresh qcow2 served read-write.
{
  const t = {};
  let differs = false;
  for (const who of Object.keys(servers)) {
    for (let i = 0; i < runs; i++) {
      const dst = join(dir, "serve-dst.qcow2");
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", dst, String(size)]);
      settle();
      const p = await start(servers[who]("qcow2", dst, false));
      const s = timed(["nbdcopy", src, uri()]);
      await stop(p);
      if (spawnSync("qemu-img", ["compare", "-q", "-f", "raw", "-F", "qcow2", src, dst]).status !== 0)
        differs = true;
      rmSync(dst, { force: true });
      t[who] = Math.min(t[who] ?? Infinity, s);
    }
  }
  fmtRow("raw → nbdcopy → qcow2 export", "qemu-nbd", t["qemu-nbd"]);
  fmtRow("", "qimg", t.qimg, `${(t.qimg / t["qemu-nbd"]).toFixed(2)}${differs ? "  (OUTPUT DIFFERS!)" : ""}`);
}
for (const f of [plain, zlib, out, sock]) rmSync(f, { force: true });
