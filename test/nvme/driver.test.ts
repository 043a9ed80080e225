/**
 * qimg's userspace NVMe driver against QEMU's emulated NVMe controller in a guest (one boot):
 * identify fields, write/read at many offsets and sizes (PRP lists, MDTS splits), requests in
 * flight, flush, write zeroes and DSM deallocate reaching the backing file (checked on the host
 * after the VM exits, with qemu-img map for holes), typed errors, and the nvme:// protocol node.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasPeer, runOk, sha256, tempDir } from "../helpers/peers.js";
import { driverCases, pattern, REGIONS } from "./guest/pattern.mjs";
import { type GuestRun, harnessFailure, REPO, runGuest, vmSkipReason } from "./vm.js";

const skip = vmSkipReason();
if (skip) console.warn(`SKIP: NVMe guest tests: ${skip}`);
const MiB = 1 << 20;
const SIZE = 64 * MiB;

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(skip !== undefined)("userspace NVMe driver in a guest", () => {
  const t = tempDir("qimg-nvme-");
  const disk = t.path("n0.img");
  let run: GuestRun;
  // biome-ignore lint/suspicious/noExplicitAny: JSON written by the guest script
  let res: any;

  beforeAll(() => {
    const fd = openSync(disk, "w");
    writeSync(fd, pattern(1, REGIONS.hostPattern[1]), 0, REGIONS.hostPattern[1], REGIONS.hostPattern[0]);
    const aa = Buffer.alloc(MiB, 0xaa);
    for (const [o, l] of [REGIONS.zeroes, REGIONS.zeroesDealloc, REGIONS.dsm]) {
      for (let p = o; p < o + l; p += MiB) writeSync(fd, aa, 0, MiB, p);
    }
    closeSync(fd);
    runOk("truncate", ["-s", String(SIZE), disk]);
    run = runGuest([disk], `node ${REPO}/test/nvme/guest/driver.mjs ${REPO}\n`, t.dir);
    const why = harnessFailure(run);
    if (why) throw new Error(why);
    try {
      res = JSON.parse(readFileSync(`${t.dir}/result.json`, "utf8"));
    } catch {
      res = undefined;
    }
  }, 900_000);
  afterAll(() => t.cleanup());

  it("the guest script ran to the end", () => {
    expect(run.stderr, run.console.slice(-2000)).toBe("");
    expect(run.rc).toBe(0);
    expect(res).toBeDefined();
  });

  it("identifies the controller and namespace", () => {
    expect(res.identify.serial).toBe("deadbeef0");
    expect(res.identify.model).toBe("QEMU NVMe Ctrl");
    expect(res.identify.firmware).toMatch(/^\d+\.\d+/);
    expect(res.identify.vendorId).toBe(0x1b36);
    expect(res.identify.maxTransfer).toBeGreaterThan(0);
    expect(res.identify.ioQueues).toBeGreaterThanOrEqual(1);
    expect(res.namespaces).toEqual([1]);
    expect(res.ns).toEqual({ size: SIZE, blockSize: 512 });
    expect(res.reopenSerial).toBe("deadbeef0");
  });

  it("reads what the host wrote", () => {
    expect(res.hostPatternSha).toBe(sha256(pattern(1, REGIONS.hostPattern[1])));
  });

  it("writes and reads back at many offsets and sizes, and the backing file has the data", () => {
    const cases = driverCases();
    expect(res.cases).toHaveLength(cases.length);
    for (const c of res.cases) expect(c.equal, `${c.offset}+${c.len}`).toBe(true);
    for (const [o, l, seed] of cases) {
      expect(Buffer.compare(readAt(disk, o, l), pattern(seed, l)), `host ${o}+${l}`).toBe(0);
    }
  });

  it("keeps many requests in flight", () => {
    expect(res.parallelEqual).toBe(true);
    expect(res.batchEqual).toBe(true);
    for (let i = 0; i < 40; i++) {
      expect(Buffer.compare(readAt(disk, REGIONS.batchBase + i * 16384, 8192), pattern(2000 + i, 8192))).toBe(
        0,
      );
    }
    for (let i = 0; i < 64; i++) {
      expect(
        Buffer.compare(readAt(disk, REGIONS.parallelBase + i * 8192, 4096), pattern(1000 + i, 4096)),
      ).toBe(0);
    }
  });

  it("moves data without copies through DMA buffers from allocBuffer", () => {
    expect(res.zeroCopy.equal).toBe(true);
    // 2 MiB each way in commands of MDTS (up to 2 MiB), plus the two 9 KiB slices; nothing bounced.
    const perCommand = Math.min(res.identify.maxTransfer, 2 * MiB);
    expect(res.zeroCopy.direct).toBe(2 * Math.ceil((2 * MiB) / perCommand) + 1 + 1);
    expect(res.zeroCopy.bounce).toBe(0);
    const [o] = REGIONS.zeroCopy;
    expect(Buffer.compare(readAt(disk, o, 2 * MiB), pattern(500, 2 * MiB))).toBe(0);
    expect(
      Buffer.compare(readAt(disk, o + 4 * MiB, 9216), pattern(500, 2 * MiB).subarray(4100, 4100 + 9216)),
    ).toBe(0);
  });

  it("does synchronous I/O on the JavaScript thread (readSync/writeSync)", () => {
    expect(res.syncEqual).toBe(true);
    const [o, l] = REGIONS.syncIo;
    expect(Buffer.compare(readAt(disk, o, l), pattern(600, l))).toBe(0);
  });

  it("runs qemu-img bench's loop natively on a queue", () => {
    const [o, l] = REGIONS.bench;
    expect(res.bench.write.requests).toBe(l / 65536);
    expect(res.bench.write.depth).toBe(8);
    expect(res.bench.write.seconds).toBeGreaterThan(0);
    expect(readAt(disk, o, l).every((x) => x === 0x3c)).toBe(true);
    expect(readAt(disk, o + l, 4096).every((x) => x === 0x3c)).toBe(false);
    expect(res.bench.read.requests).toBe(100);
    // 64 asked for: capped at one queue's command slots.
    expect(res.bench.read.depth).toBeGreaterThan(1);
    expect(res.bench.read.depth).toBeLessThan(64);
    expect(res.bench.unaligned).toBeNull();
  });

  it("write zeroes and DSM deallocate reach the backing file", () => {
    expect(res.zeroesReadBack).toBe(true);
    for (const [o, l] of [REGIONS.zeroes, REGIONS.zeroesDealloc, REGIONS.dsm]) {
      expect(
        readAt(disk, o, l).every((x) => x === 0),
        `zeros at ${o}`,
      ).toBe(true);
    }
    if (!hasPeer("qemu-img")) return;
    const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", "-f", "raw", disk])) as {
      start: number;
      length: number;
      data: boolean;
    }[];
    const isHole = (o: number, l: number) =>
      map.some((e) => !e.data && e.start <= o && e.start + e.length >= o + l);
    expect(isHole(REGIONS.dsm[0], REGIONS.dsm[1])).toBe(true);
    expect(isHole(REGIONS.zeroesDealloc[0], REGIONS.zeroesDealloc[1])).toBe(true);
  });

  it("reports typed errors", () => {
    expect(res.errors).toEqual({
      outOfRange: "ERR_QIMG_OUT_OF_RANGE",
      unaligned: "ERR_QIMG_INVALID_ARGUMENT",
      inactiveNamespace: "ERR_QIMG_NOT_FOUND",
      secondOpen: "ERR_QIMG_LOCKED",
      bufferTooBig: "ERR_QIMG_INVALID_ARGUMENT",
      batchOutOfRange: "ERR_QIMG_OUT_OF_RANGE",
      noDevice: "ERR_QIMG_NOT_FOUND",
      badAddress: "ERR_QIMG_INVALID_ARGUMENT",
      afterClose: "ERR_QIMG_INVALID_ARGUMENT",
      syncOutOfRange: "ERR_QIMG_OUT_OF_RANGE",
      syncUnaligned: "ERR_QIMG_INVALID_ARGUMENT",
    });
  });

  it("closes with requests in flight: they complete, close succeeds", () => {
    expect(res.closeInFlight).toEqual(["ok", "ok", "ok"]);
  });

  it("reports a controller reset mid-run clearly and recovers by reopening", () => {
    expect(res.reset.code).toBe("ERR_QIMG_IO");
    expect(res.reset.message).toMatch(/reset/);
    expect(res.reset.ms).toBeLessThan(15000);
    expect(res.reset.dataAfterReopen).toBe(true);
  });

  it("serves unaligned byte access through nvme:// (read-modify-write)", () => {
    expect(res.imageSize).toBe(SIZE);
    expect(res.unalignedEqual).toBe(true);
    expect(res.storageEqual).toBe(true);
    const [uo, ul] = REGIONS.unaligned;
    expect(Buffer.compare(readAt(disk, uo, ul), pattern(7, ul))).toBe(0);
    const [so, sl] = REGIONS.storageWrite;
    expect(Buffer.compare(readAt(disk, so, sl), pattern(8, sl))).toBe(0);
    // The bytes around the unaligned write are untouched (they were never written: zeros).
    expect(readAt(disk, uo - 123, 123).every((x) => x === 0)).toBe(true);
  });
});
