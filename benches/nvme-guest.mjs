// Runs inside the NVMe guest for benches/nvme.mjs: qimg's userspace driver on 0000:00:10.0 —
// 4 KiB random reads and writes at queue depth 1 and 32 (QD32 = batches of 32 in one call), and
// 1 MiB sequential reads and writes — for `secs` seconds each, from DMA buffers (allocBuffer, no
// copies), and once through the bounce buffers. Prints one JSON object.
const [repo, secsArg] = process.argv.slice(2);
const secs = Number(secsArg);
const { NvmeController } = await import(`${repo}/dist/index.js`);
const c = await NvmeController.open("0000:00:10.0");
const ns = await c.namespace(1);
const blocks4k = Math.floor(ns.size / 4096);
let seed = 12345;
const rand = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed;
};

async function job(kind, bs, qd, sequential, zeroCopy = true) {
  const end = Date.now() + secs * 1000;
  let ops = 0;
  let next = 0;
  const worker = async () => {
    const buf = zeroCopy ? c.allocBuffer(bs).fill(0x5a) : Buffer.alloc(bs, 0x5a);
    while (Date.now() < end) {
      const off = sequential
        ? (next++ * bs) % (ns.size - (ns.size % bs))
        : (rand() % ((ns.size / bs) | 0)) * bs;
      if (kind === "read") await ns.read(off, bs, buf);
      else await ns.write(off, buf);
      ops++;
    }
  };
  // QD > 1 on random 4 KiB: one batch call keeps `qd` commands in flight (readMany/writeMany).
  const batcher = async () => {
    const bufs = Array.from({ length: qd }, () => c.allocBuffer(bs).fill(0x5a));
    while (Date.now() < end) {
      const offs = bufs.map(() => (rand() % ((ns.size / bs) | 0)) * bs);
      if (kind === "read") await ns.readMany(bufs.map((buffer, i) => ({ offset: offs[i], buffer })));
      else await ns.writeMany(bufs.map((data, i) => ({ offset: offs[i], data })));
      ops += qd;
    }
  };
  const t0 = process.hrtime.bigint();
  if (qd > 1 && !sequential) await batcher();
  else await Promise.all(Array.from({ length: qd }, worker));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { iops: ops / s, mbps: (ops * bs) / s / 1e6 };
}

void blocks4k;
const out = {
  queues: c.identify().ioQueues,
  randread_qd1: await job("read", 4096, 1, false),
  randread_qd32: await job("read", 4096, 32, false),
  randwrite_qd1: await job("write", 4096, 1, false),
  randwrite_qd32: await job("write", 4096, 32, false),
  seqread_1m: await job("read", 1 << 20, 4, true),
  seqwrite_1m: await job("write", 1 << 20, 4, true),
  seqread_1m_bounce: await job("read", 1 << 20, 4, true, false),
};
await c.close();
console.log(JSON.stringify(out));
