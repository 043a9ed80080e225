// Runs inside the NVMe guest for benches/nvme.mjs: qimg's userspace driver on 0000:00:10.0 —
// 4 KiB random reads and writes at queue depth 1 and 32 (QD32 = batches of 32 in one call), and
// 1 MiB sequential reads and writes — for `secs` seconds each, from DMA buffers (allocBuffer, no
// copies), and once through the bounce buffers. Variants: `_sync` runs QD1 with readSync/
// writeSync (no thread-pool hop), `_batch` keeps the 4 sequential 1 MiB requests in flight as one
// readMany/writeMany call instead of 4 JS workers. Then `qimg bench` (the CLI: its loop runs
// natively on one NVMe queue) on the same namespace, `bench_*` rows, timed by its own "Run
// completed in" line. Prints one JSON object. A third argument (comma-separated row names) runs
// only those rows.
import { execFileSync } from "node:child_process";

const [repo, secsArg, onlyArg] = process.argv.slice(2);
const secs = Number(secsArg);
const only = onlyArg ? new Set(onlyArg.split(",")) : undefined;
const want = (name) => !only || only.has(name);
const { NvmeController } = await import(`${repo}/dist/index.js`);
const BDF = "0000:00:10.0";
const c = await NvmeController.open(BDF);
const ns = await c.namespace(1);
let seed = 12345;
const rand = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed;
};

/** `kind` read/write; `mode`: async (one request per await), sync, batch (QD in one call). */
async function job(kind, bs, qd, sequential, { zeroCopy = true, mode = "async" } = {}) {
  const end = Date.now() + secs * 1000;
  let ops = 0;
  let next = 0;
  const offset = () =>
    sequential ? (next++ * bs) % (ns.size - (ns.size % bs)) : (rand() % ((ns.size / bs) | 0)) * bs;
  // The zero-copy buffers of all workers: slices of one DMA buffer (2 MiB and up: huge pages).
  const pool = zeroCopy ? c.allocBuffer(qd * bs).fill(0x5a) : undefined;
  let lanes = 0;
  const worker = async () => {
    const lane = lanes++;
    const buf = pool ? pool.subarray(lane * bs, (lane + 1) * bs) : Buffer.alloc(bs, 0x5a);
    while (Date.now() < end) {
      const off = offset();
      if (kind === "read") await ns.read(off, bs, buf);
      else await ns.write(off, buf);
      ops++;
    }
  };
  const syncWorker = () => {
    const buf = c.allocBuffer(bs).fill(0x5a);
    while (Date.now() < end) {
      const off = offset();
      if (kind === "read") ns.readSync(off, buf);
      else ns.writeSync(off, buf);
      ops++;
    }
  };
  // One call keeps `qd` commands in flight (readMany/writeMany).
  const batcher = async () => {
    const bufs = Array.from({ length: qd }, (_, i) => pool.subarray(i * bs, (i + 1) * bs));
    while (Date.now() < end) {
      const offs = bufs.map(() => offset());
      if (kind === "read") await ns.readMany(bufs.map((buffer, i) => ({ offset: offs[i], buffer })));
      else await ns.writeMany(bufs.map((data, i) => ({ offset: offs[i], data })));
      ops += qd;
    }
  };
  const t0 = process.hrtime.bigint();
  if (mode === "sync") syncWorker();
  else if (mode === "batch") await batcher();
  else await Promise.all(Array.from({ length: qd }, worker));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { iops: ops / s, mbps: (ops * bs) / s / 1e6 };
}

const out = { queues: c.identify().ioQueues, transfer: c.identify().maxTransfer };
const apiRows = [
  ["randread_qd1", "read", 4096, 1, false, {}],
  ["randread_qd1_sync", "read", 4096, 1, false, { mode: "sync" }],
  ["randread_qd32", "read", 4096, 32, false, { mode: "batch" }],
  ["randwrite_qd1", "write", 4096, 1, false, {}],
  ["randwrite_qd1_sync", "write", 4096, 1, false, { mode: "sync" }],
  ["randwrite_qd32", "write", 4096, 32, false, { mode: "batch" }],
  ["seqread_1m", "read", 1 << 20, 4, true, {}],
  ["seqread_1m_batch", "read", 1 << 20, 4, true, { mode: "batch" }],
  ["seqwrite_1m", "write", 1 << 20, 4, true, {}],
  ["seqwrite_1m_batch", "write", 1 << 20, 4, true, { mode: "batch" }],
  ["seqread_1m_bounce", "read", 1 << 20, 4, true, { zeroCopy: false }],
];
for (const [name, kind, bs, qd, seq, o] of apiRows) {
  if (want(name)) out[name] = await job(kind, bs, qd, seq, o);
}
await c.close();

// `qimg bench` (qemu-img's sequential loop: offset advancing by the buffer size), sized so each
// run takes about `secs` seconds at the rate the API reached.
const cli = `${repo}/dist/cli/main.js`;
function qimgBench(name, api, bs, qd, write) {
  if (!want(name)) return;
  const count = Math.max(200, Math.round((api?.iops ?? 1000) * secs));
  const args = [cli, "bench", "-f", "raw", "-c", String(count), "-d", String(qd), "-s", String(bs)];
  if (write) args.push("-w", "--pattern=0x5a");
  args.push(`nvme://${BDF}/1`);
  try {
    const text = execFileSync("node", args, { encoding: "utf8" });
    const m = /Run completed in ([\d.]+) seconds/.exec(text);
    if (!m) throw new Error(text);
    const s = Number(m[1]);
    out[name] = { iops: count / s, mbps: (count * bs) / s / 1e6 };
  } catch (e) {
    console.error(`qimg bench ${name}: ${e.message}`);
  }
}
qimgBench("bench_read_qd1", out.randread_qd1_sync, 4096, 1, false);
qimgBench("bench_read_qd32", out.randread_qd32, 4096, 32, false);
qimgBench("bench_write_qd1", out.randwrite_qd1_sync, 4096, 1, true);
qimgBench("bench_write_qd32", out.randwrite_qd32, 4096, 32, true);
qimgBench("bench_seqread_1m", out.seqread_1m_batch, 1 << 20, 4, false);
qimgBench("bench_seqwrite_1m", out.seqwrite_1m_batch, 1 << 20, 4, true);
console.log(JSON.stringify(out));
