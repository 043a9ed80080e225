#!/usr/bin/env node
/**
 * NVMe benchmark (issue #9): qimg's userspace driver over vfio-pci against the guest kernel's nvme
 * driver on the same emulated controller (QEMU's `-device nvme`, TCG guest, test/vm/run.sh), in
 * one run: two boots, one with the controller on vfio-pci driven by benches/nvme-guest.mjs, one
 * with `--kernel-nvme` measured by fio (libaio, O_DIRECT) on /dev/nvme0n1. Prints IOPS and MB/s
 * for 4 KiB random read/write at QD1 and QD32 and 1 MiB sequential read/write, and the ratio
 * qimg/kernel (target ≥ 1.0). qimg's rows: the Node API (async `read`/`write`, `_sync` for
 * readSync/writeSync, `_batch` for readMany/writeMany, `_bounce` through plain Buffers) and
 * `qimg bench` (`bench_*`: its loop runs natively on one queue; sequential offsets, as
 * qemu-img bench's). Not a test: nothing is asserted. Under TCG the absolute figures are the
 * emulator's; the ratio is what matters.
 *
 * Usage: node benches/nvme.mjs [--size 256M] [--secs 5] [--dir benches/work]
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { benchArgs } from "./workload.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { size, dir, opt } = benchArgs();
const secs = Number(opt("secs", "5"));
if (spawnSync("qemu-system-x86_64", ["--version"]).status !== 0) {
  console.log("SKIP: qemu-system-x86_64 is not installed");
  process.exit(0);
}
const fio = spawnSync("fio", ["--version"]).status === 0;
if (!fio) console.log("note: fio is not installed: no kernel-driver figures (apt-get install fio)");

const work = mkdtempSync(join(dir, "nvme-"));
const disk = join(work, "n0.img");
spawnSync("truncate", ["-s", String(size), disk]);
// Allocate the file so reads hit data, not holes, in both runs.
spawnSync("fallocate", ["-l", String(size), disk]);

function boot(script, kernel, translate = false) {
  const tag = kernel ? (translate ? "kt" : "xk") : "xq";
  const xfer = join(work, tag);
  const path = join(work, `${tag}.sh`);
  writeFileSync(path, script);
  const args = [join(repo, "test/vm/run.sh"), "--timeout", String(180 + secs * 30), "--nvme", disk];
  if (kernel) args.push("--kernel-nvme");
  if (translate) args.push("--iommu-translate");
  args.push(path, xfer);
  const r = spawnSync("bash", args, { encoding: "utf8" });
  const stdout = (() => {
    try {
      return readFileSync(join(xfer, "stdout"), "utf8");
    } catch {
      return "";
    }
  })();
  if (r.status !== 0) {
    console.error(`guest run failed (${r.status}): ${r.stderr}${readFileSync(join(xfer, "stderr"), "utf8")}`);
  }
  return stdout;
}

const qimgOut = boot(`UV_THREADPOOL_SIZE=32 node ${repo}/benches/nvme-guest.mjs ${repo} ${secs}\n`, false);
const q = JSON.parse(qimgOut.trim().split("\n").pop() || "{}");

// fio jobs in the kernel-driver boots.
const jobs = [
  ["randread_qd1", "randread", "4k", 1],
  ["randread_qd32", "randread", "4k", 32],
  ["randwrite_qd1", "randwrite", "4k", 1],
  ["randwrite_qd32", "randwrite", "4k", 32],
  ["seqread_1m", "read", "1M", 4],
  ["seqwrite_1m", "write", "1M", 4],
];
// qimg rows (benches/nvme-guest.mjs) and the fio job each is compared with: the Node API (async
// per request, `_sync` on the JS thread, `_batch` one call per queue depth, `_bounce` through a
// JS Buffer) and `qimg bench` (`bench_*`, its loop native; sequential offsets as qemu-img's).
const rows = [
  ["randread_qd1", "randread_qd1"],
  ["randread_qd1_sync", "randread_qd1"],
  ["bench_read_qd1", "randread_qd1"],
  ["randread_qd32", "randread_qd32"],
  ["bench_read_qd32", "randread_qd32"],
  ["randwrite_qd1", "randwrite_qd1"],
  ["randwrite_qd1_sync", "randwrite_qd1"],
  ["bench_write_qd1", "randwrite_qd1"],
  ["randwrite_qd32", "randwrite_qd32"],
  ["bench_write_qd32", "randwrite_qd32"],
  ["seqread_1m", "seqread_1m"],
  ["seqread_1m_batch", "seqread_1m"],
  ["bench_seqread_1m", "seqread_1m"],
  ["seqwrite_1m", "seqwrite_1m"],
  ["seqwrite_1m_batch", "seqwrite_1m"],
  ["bench_seqwrite_1m", "seqwrite_1m"],
  ["seqread_1m_bounce", "seqread_1m"],
];
/** fio in a kernel-driver boot: per job IOPS and MB/s (`translate`: DMA through the vIOMMU). */
function kernelRun(translate) {
  const k = {};
  if (!fio) return k;
  const lines = jobs.map(
    ([name, rw, bs, qd]) =>
      `fio --name=${name} --filename=/dev/nvme0n1 --rw=${rw} --bs=${bs} --iodepth=${qd} --ioengine=libaio ` +
      `--direct=1 --time_based --runtime=${secs} --randrepeat=0 --output-format=json > /xfer/${name}.json`,
  );
  boot(
    `for i in $(seq 50); do [ -b /dev/nvme0n1 ] && break; sleep 0.2; done\n${lines.join("\n")}\n`,
    true,
    translate,
  );
  for (const [name] of jobs) {
    try {
      const j = JSON.parse(readFileSync(join(work, translate ? "kt" : "xk", `${name}.json`), "utf8")).jobs[0];
      const side = j.read.io_bytes > 0 ? j.read : j.write;
      k[name] = { iops: side.iops, mbps: side.bw_bytes / 1e6 };
    } catch {
      k[name] = undefined;
    }
  }
  return k;
}
// The kernel driver twice: with iommu=pt (its DMA bypasses translation; the harness default)
// and with translated DMA, the path vfio (and so qimg) always takes.
const kernels = [
  ["kernel, iommu=pt", kernelRun(false)],
  ["kernel, translated DMA", kernelRun(true)],
];

const f = (x) => (x === undefined ? "-" : x.toFixed(x >= 100 ? 0 : 1));
console.log(
  `NVMe in a TCG guest, ${size / 2 ** 20} MiB namespace, ${secs} s per job, qimg ${q.queues} I/O queues`,
);
for (const [label, k] of kernels) {
  console.log(`\nagainst the ${label}`);
  console.log("job                  qimg IOPS   qimg MB/s   kernel IOPS  kernel MB/s   ratio");
  for (const [name, refName] of rows) {
    const a = q[name];
    const b = k[refName];
    const ratio = a && b ? (a.iops / b.iops).toFixed(2) : "-";
    console.log(
      `${name.padEnd(20)} ${f(a?.iops).padStart(9)}  ${f(a?.mbps).padStart(10)}  ${f(b?.iops).padStart(11)}  ${f(b?.mbps).padStart(11)}  ${ratio.padStart(6)}`,
    );
  }
}
rmSync(work, { recursive: true, force: true });
