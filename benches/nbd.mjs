#!/usr/bin/env node
/**
 * NBD source benchmark: a qcow2 image served by qemu-nbd (Unix socket) converted to raw by qimg,
 * by `qemu-img convert nbd+unix://…` and by nbdcopy, side by side in one run, for a plain and a
 * zlib-compressed qcow2 of the shared workload. qemu-nbd decodes the qcow2; the three clients
 * only move bytes (and skip holes by block status), so this measures the NBD client. Prints
 * seconds, MB/s, peak RSS and qimg's ratio to the faster of the two references (target ≤ 1.0).
 * qimg uses multi-conn (qemu-nbd `--shared=16` advertises it; 4 connections by default) and is
 * also timed on one connection (`multi-conn=1`, row `qimg 1c`, not in the ratio).
 * Not a test: nothing is asserted, but an output differing from the image is flagged.
 *
 * Usage: node benches/nbd.mjs [--size 4G] [--dir benches/work] [--runs 1] [--m 8]
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { benchArgs, best as bestOf, makeWorkload, qimgCli, timed } from "./workload.mjs";

const { size, dir, opt } = benchArgs();
const runs = Number(opt("runs", "1"));
const m = opt("m", "8");

const best = (argv, out) => bestOf(argv, out, runs);

async function serve(img, sock) {
  rmSync(sock, { force: true });
  const p = spawn("qemu-nbd", ["--persistent", "--shared=16", "-r", "-k", sock, "-f", "qcow2", img], {
    stdio: "ignore",
  });
  const t0 = Date.now();
  while (!existsSync(sock)) {
    if (Date.now() - t0 > 10_000) throw new Error("qemu-nbd did not start");
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}

const haveNbdcopy = spawnSync("nbdcopy", ["--version"]).status === 0;
const src = makeWorkload(join(dir, "workload.raw"), size);
const mb = size / 1e6;
console.log(
  `workload: ${src} (${(size / 1024 ** 3).toFixed(2)} GiB), best of ${runs}, qimg -m ${m}` +
    (haveNbdcopy ? "" : " (nbdcopy missing: apt-get install libnbd-bin)"),
);
// qimg's fixed cost (Node start, addon load), which dominates at small sizes.
const startup = timed([...qimgCli, "--version"]).secs;
console.log(`qimg CLI startup alone: ${startup.toFixed(2)} s (included in qimg's figures)`);
console.log(
  "source            tool      seconds   MB/s  peak RSS MiB  +sync s   ratio vs best reference / vs best reference+sync",
);
for (const kind of ["plain", "zlib"]) {
  const img = join(dir, `nbd-${kind}.qcow2`);
  execFileSync("qemu-img", [
    "convert",
    ...(kind === "zlib" ? ["-c"] : []),
    "-f",
    "raw",
    "-O",
    "qcow2",
    src,
    img,
  ]);
  const sock = join(dir, `nbd-${kind}-${process.pid}.sock`);
  const server = await serve(img, sock);
  const uri = `nbd+unix:///?socket=${sock}`;
  const out = join(dir, "nbd-out.raw");
  const rows = [];
  try {
    rows.push(["qemu-img", best(["qemu-img", "convert", "-m", m, "-f", "raw", "-O", "raw", uri, out], out)]);
    if (haveNbdcopy) {
      // nbdcopy writes into an existing file: give it a sparse one of the right size.
      const nb = best(["sh", "-c", `truncate -s ${size} ${out} && nbdcopy '${uri}' ${out}`], out);
      rows.push(["nbdcopy", nb]);
    }
    // qimg on one connection (`multi-conn=1`), for the effect of multi-conn; not in the ratio.
    const q1 = best(
      [...qimgCli, "convert", "-m", m, "-f", "raw", "-O", "raw", `${uri}&multi-conn=1`, out],
      out,
    );
    const same1 = spawnSync("cmp", ["-s", src, out]).status === 0;
    const q = best([...qimgCli, "convert", "-m", m, "-f", "raw", "-O", "raw", uri, out], out);
    const same = spawnSync("cmp", ["-s", src, out]).status === 0;
    const ref = Math.min(...rows.map((r) => r[1].secs));
    // qimg's output is durable when it exits; qemu-img convert and nbdcopy (without --flush) leave
    // theirs in the page cache, so each is also timed with a following `sync`.
    const refSynced = Math.min(...rows.map((r) => r[1].synced));
    const line = (t, r) =>
      `${t.padEnd(9)} ${r.secs.toFixed(2).padStart(7)} ${(mb / r.secs).toFixed(0).padStart(6)} ${(r.rss / 1024).toFixed(0).padStart(12)} ${r.synced.toFixed(2).padStart(8)}`;
    for (const [i, [t, r]] of rows.entries())
      console.log(`${(i === 0 ? `qcow2 ${kind}` : "").padEnd(17)} ${line(t, r)}`);
    console.log(
      `${"".padEnd(17)} ${line("qimg 1c", q1)}   (one connection)${same1 ? "" : "  (OUTPUT DIFFERS!)"}`,
    );
    console.log(
      `${"".padEnd(17)} ${line("qimg", q)}   ${(q.secs / ref).toFixed(2)} / ${(q.secs / refSynced).toFixed(2)}${same ? "" : "  (OUTPUT DIFFERS!)"}`,
    );
  } finally {
    server.kill();
    rmSync(out, { force: true });
    rmSync(img, { force: true });
    rmSync(sock, { force: true });
  }
}
