// Runs inside the NVMe test guest (test/nvme/driver.test.ts): drives the emulated controller at
// 0000:00:10.0 through qimg's Node API and the nvme:// protocol, and writes what it saw to
// /xfer/result.json for the host to assert on (and to check against the backing file).
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { driverCases, pattern, REGIONS } from "./pattern.mjs";

const repo = process.argv[2];
const { NvmeController, open } = await import(`${repo}/dist/index.js`);
const BDF = "0000:00:10.0";
const out = { errors: {} };
const sha = (b) => createHash("sha256").update(b).digest("hex");
const codeOf = async (f) => {
  try {
    await f();
    return "no error";
  } catch (e) {
    return e.code ?? String(e);
  }
};

const t0 = Date.now();
const c = await NvmeController.open(BDF);
out.openMs = Date.now() - t0;
out.identify = c.identify();
out.namespaces = await c.namespaces();
const ns = await c.namespace(1);
out.ns = { size: ns.size, blockSize: ns.blockSize };

// Data the host wrote into the backing file before boot.
out.hostPatternSha = sha(await ns.read(REGIONS.hostPattern[0], REGIONS.hostPattern[1]));

// Many offsets and sizes: PRP1 only, PRP1+PRP2, PRP lists, MDTS and slot-count splits.
out.cases = [];
for (const [offset, len, seed] of driverCases()) {
  const data = pattern(seed, len);
  await ns.write(offset, data);
  const back = await ns.read(offset, len);
  out.cases.push({ offset, len, equal: Buffer.compare(data, back) === 0 });
}
await ns.flush();

// Many requests in flight at once.
const N = 64;
await Promise.all(
  Array.from({ length: N }, (_, i) => ns.write(REGIONS.parallelBase + i * 8192, pattern(1000 + i, 4096))),
);
const reads = await Promise.all(
  Array.from({ length: N }, (_, i) => ns.read(REGIONS.parallelBase + i * 8192, 4096)),
);
out.parallelEqual = reads.every((b, i) => Buffer.compare(b, pattern(1000 + i, 4096)) === 0);

// Batches: a whole queue depth (and more) in one call, plain Buffers and DMA buffers mixed.
const batchW = Array.from({ length: 40 }, (_, i) => {
  const data = i % 2 ? Buffer.alloc(8192) : c.allocBuffer(8192);
  pattern(2000 + i, 8192).copy(data);
  return { offset: REGIONS.batchBase + i * 16384, data };
});
await ns.writeMany(batchW);
const batchR = batchW.map((w, i) => ({
  offset: w.offset,
  buffer: i % 3 ? Buffer.alloc(8192) : c.allocBuffer(8192),
}));
await ns.readMany(batchR);
out.batchEqual = batchR.every((r, i) => Buffer.compare(r.buffer, pattern(2000 + i, 8192)) === 0);
out.errors.batchOutOfRange = await codeOf(() =>
  ns.readMany([{ offset: ns.size, buffer: Buffer.alloc(512) }]),
);

await ns.writeZeroes(REGIONS.zeroes[0], REGIONS.zeroes[1]);
await ns.writeZeroes(REGIONS.zeroesDealloc[0], REGIONS.zeroesDealloc[1], { deallocate: true });
out.zeroesReadBack = (await ns.read(REGIONS.zeroes[0], REGIONS.zeroes[1])).every((x) => x === 0);
await ns.discard(REGIONS.dsm[0], REGIONS.dsm[1]);
await ns.flush();

// Zero-copy: data straight between the controller and DMA-mapped Buffers (and slices of them).
const before = c.stats();
const dmaW = c.allocBuffer(2 << 20);
const dmaR = c.allocBuffer(2 << 20);
pattern(500, dmaW.length).copy(dmaW);
await ns.write(REGIONS.zeroCopy[0], dmaW);
await ns.read(REGIONS.zeroCopy[0], dmaR.length, dmaR);
const wholeEqual = Buffer.compare(dmaW, dmaR) === 0;
const sliceW = dmaW.subarray(4100, 4100 + 9216); // a dword-aligned slice starting mid-page
await ns.write(REGIONS.zeroCopy[0] + (4 << 20), sliceW);
const sliceR = await ns.read(REGIONS.zeroCopy[0] + (4 << 20), 9216, dmaR.subarray(12, 12 + 9216));
const after = c.stats();
out.zeroCopy = {
  equal: wholeEqual && Buffer.compare(sliceW, sliceR) === 0,
  direct: after.directCommands - before.directCommands,
  bounce: after.bounceCommands - before.bounceCommands,
};
out.errors.bufferTooBig = await codeOf(async () => c.allocBuffer(128 << 20));

// Synchronous I/O on the JavaScript thread (readSync/writeSync): plain and DMA buffers.
{
  const [so, sl] = REGIONS.syncIo;
  const data = pattern(600, sl);
  ns.writeSync(so, data.subarray(0, 4096));
  const dmaData = c.allocBuffer(sl - 4096);
  data.copy(dmaData, 0, 4096);
  ns.writeSync(so + 4096, dmaData);
  const dma = c.allocBuffer(sl);
  ns.readSync(so, dma);
  const small = Buffer.alloc(1024);
  ns.readSync(so + 512, small);
  out.syncEqual = Buffer.compare(dma, data) === 0 && Buffer.compare(small, data.subarray(512, 1536)) === 0;
  out.errors.syncOutOfRange = await codeOf(async () => ns.readSync(ns.size, Buffer.alloc(512)));
  out.errors.syncUnaligned = await codeOf(async () => ns.writeSync(100, Buffer.alloc(512)));
}

// qemu-img bench's loop natively on one queue: 32 writes of 64 KiB fill the bench region with
// the pattern byte (a flush every 16); reads deeper than a queue; unaligned → null (generic).
{
  const [bo, bl] = REGIONS.bench;
  const base = { stepSize: 65536, pattern: 0, flushInterval: 0, write: false };
  const w = await ns.bench({
    ...base,
    count: bl / 65536,
    depth: 8,
    offset: bo,
    bufferSize: 65536,
    write: true,
    pattern: 0x3c,
    flushInterval: 16,
  });
  const r = await ns.bench({ ...base, count: 100, depth: 64, offset: 0, bufferSize: 4096, stepSize: 4096 });
  const unaligned = await ns.bench({ ...base, count: 4, depth: 1, offset: 0, bufferSize: 1000 });
  out.bench = { write: w, read: r, unaligned };
}

out.errors.outOfRange = await codeOf(() => ns.read(ns.size, 512));
out.errors.unaligned = await codeOf(() => ns.read(100, 512));
out.errors.inactiveNamespace = await codeOf(() => c.namespace(2));
out.errors.secondOpen = await codeOf(() => NvmeController.open(BDF));
out.errors.noDevice = await codeOf(() => NvmeController.open("0000:00:1f.7"));
out.errors.badAddress = await codeOf(() => NvmeController.open("00:10.0"));
await c.close();
out.errors.afterClose = await codeOf(() => ns.read(0, 512));

// The protocol node: unaligned byte access through a raw image on nvme://.
const img = await open(`nvme://${BDF}/1`, { format: "raw" });
out.imageSize = img.virtualSize ?? null;
const [uo, ul] = REGIONS.unaligned;
await img.write(uo, pattern(7, ul));
out.unalignedEqual = Buffer.compare(await img.read(uo, ul), pattern(7, ul)) === 0;
const [so, sl] = REGIONS.storageWrite;
await img.write(so, pattern(8, sl));
out.storageEqual = Buffer.compare(await img.read(so, sl), pattern(8, sl)) === 0;
await img.flush();
await img.close();

// Reopen after a clean close (controller shut down and re-enabled).
const c2 = await NvmeController.open(BDF);
out.reopenSerial = c2.identify().serial;
await c2.close();
// close() while requests submitted on this thread are still in flight: everything settles (the
// requests complete first), and the controller opens again afterwards (the reset test below).
{
  const c5 = await NvmeController.open(BDF);
  const ns5 = await c5.namespace(1);
  const reads = [ns5.read(0, 2 << 20, c5.allocBuffer(2 << 20)), ns5.read(4 << 20, 1 << 20)];
  const settled = await Promise.allSettled([...reads, c5.close()]);
  out.closeInFlight = settled.map((r) =>
    r.status === "fulfilled" ? "ok" : (r.reason.code ?? String(r.reason)),
  );
}
// A function-level reset of the controller in the middle of a run: the request in flight fails
// with a clear error (no hang); closing and reopening recovers, and the data is still there.
{
  const { spawn } = await import("node:child_process");
  const c3 = await NvmeController.open(BDF);
  const ns3 = await c3.namespace(1);
  const t = Date.now();
  const resetter = spawn("sh", ["-c", `sleep 1; echo 1 > /sys/bus/pci/devices/${BDF}/reset`]);
  const resetDone = new Promise((r) => resetter.on("exit", r));
  let err;
  try {
    for (let i = 0; Date.now() - t < 20000; i++) await ns3.read(((i * 7) % 64) * 65536, 65536);
    err = "no error";
  } catch (e) {
    err = e;
  }
  await resetDone;
  out.reset = { code: err.code ?? String(err), message: err.message ?? "", ms: Date.now() - t };
  await c3.close().catch((e) => {
    out.reset.closeError = e.code;
  });
  const c4 = await NvmeController.open(BDF);
  const ns4 = await c4.namespace(1);
  const [o0, l0, seed0] = driverCases()[10];
  out.reset.dataAfterReopen = Buffer.compare(await ns4.read(o0, l0), pattern(seed0, l0)) === 0;
  await c4.close();
}
writeFileSync("/xfer/result.json", JSON.stringify(out, null, 1));
