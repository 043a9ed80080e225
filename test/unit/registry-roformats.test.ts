/** Probing of bochs, cloop, dmg and parallels by content, with QEMU's scores. */
import { closeSync, existsSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { getFormat, probeFormat } from "../../ts/registry/index.js";

const SAMPLES = join(import.meta.dirname, "../../../shared/samples");

/** The first 2048 and last 512 bytes of a sample, as ts/graph/probe.ts reads them. */
function headTail(rel: string): [Buffer, Buffer] {
  const p = join(SAMPLES, rel);
  const fd = openSync(p, "r");
  try {
    const head = Buffer.alloc(2048);
    const n = readSync(fd, head, 0, 2048, 0);
    const size = statSync(p).size;
    const tail = Buffer.alloc(512);
    readSync(fd, tail, 0, 512, size - 512);
    return [head.subarray(0, n), tail];
  } finally {
    closeSync(fd);
  }
}

describe("registry: issue-7 formats", () => {
  it("scores synthetic heads as QEMU does", () => {
    const prl = Buffer.alloc(64);
    prl.write("WithoutFreeSpace", 0, "latin1");
    prl.writeUInt32LE(2, 16);
    expect(getFormat("parallels").probe(prl, "x")).toBe(100);
    prl.writeUInt32LE(3, 16);
    expect(getFormat("parallels").probe(prl, "x")).toBe(0);
    const cloop = Buffer.from(
      "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
    );
    expect(getFormat("cloop").probe(cloop, "x")).toBe(2);
    expect(getFormat("cloop").probe(Buffer.from("#!/bin/sh\n#V3.0 Format\n"), "x")).toBe(0);
    const tail = Buffer.alloc(512);
    tail.write("koly", 0, "latin1");
    expect(getFormat("dmg").probe(Buffer.alloc(512), "disk.img", tail)).toBe(100);
    expect(getFormat("dmg").probe(Buffer.alloc(512), "disk.dmg")).toBe(2);
    expect(getFormat("dmg").probe(Buffer.alloc(512), "disk.img", Buffer.alloc(512))).toBe(0);
    expect(getFormat("bochs").probe(Buffer.alloc(512), "x")).toBe(0);
    for (const f of ["bochs", "cloop", "dmg"]) expect(getFormat(f).writable).toBe(false);
    expect(getFormat("parallels").writable).toBe(true);
  });

  it.skipIf(!existsSync(SAMPLES))("probes every sample to its format", () => {
    for (const [rel, fmt] of [
      ["qemu-iotests/empty.bochs", "bochs"],
      ["generated/bximage-growing.bochs", "bochs"],
      ["qemu-iotests/simple-pattern.cloop", "cloop"],
      ["generated/cloop-v2-4k-7zip.cloop", "cloop"],
      ["qemu-iotests/simple-dmg.dmg", "dmg"],
      ["node-udif/raw.dmg", "dmg"],
      ["qemu-iotests/parallels-v1", "parallels"],
      ["qemu-iotests/parallels-v2", "parallels"],
    ]) {
      const [head, tail] = headTail(rel);
      expect(probeFormat(head, "noext", tail), rel).toBe(fmt);
    }
  });
});
