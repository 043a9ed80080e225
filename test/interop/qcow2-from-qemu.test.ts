/**
 * QEMU → qimg: images qemu-img creates and qemu-io fills with known patterns read back
 * identically in qimg (sha256 of the raw decode), over compat × cluster size × refcount bits,
 * lazy refcounts, preallocation and backing chains.
 */
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemuDecode, runOk, sha256, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

const SIZE = 8 << 20;

/** A qemu-io script touching many cluster boundaries, zero writes and discards. */
function fill(image: string, clusterSize: number): void {
  // Patterns around cluster boundaries, kept inside the image for every cluster size.
  const cluster = Math.min(clusterSize, SIZE / 16);
  const cmds = [
    "write -P 0x11 0 4096",
    `write -P 0x22 ${cluster - 512} 1024`,
    `write -P 0x33 ${3 * cluster} ${2 * cluster + 512}`,
    `write -z ${3 * cluster + 1024} 2048`,
    "write -P 0x44 1M 1M",
    "write -z 1536k 64k",
    `discard ${1 << 20} ${cluster}`,
    `write -P 0x55 ${SIZE - 4096} 4096`,
  ];
  runOk("qemu-io", ["-f", "qcow2", ...cmds.flatMap((c) => ["-c", c]), image]);
}

async function qimgDecode(image: string): Promise<Buffer> {
  const img = await open(image, { readOnly: true });
  try {
    return await img.read(0, img.virtualSize);
  } finally {
    await img.close();
  }
}

const cases: Array<{ name: string; opts: string; cluster: number }> = [];
for (const compat of ["0.10", "1.1"]) {
  for (const cluster of [512, 4096, 65536, 2 << 20]) {
    cases.push({
      name: `compat=${compat} cluster=${cluster}`,
      opts: `compat=${compat},cluster_size=${cluster}`,
      cluster,
    });
  }
}
for (const bits of [1, 2, 8, 32, 64]) {
  cases.push({ name: `refcount_bits=${bits}`, opts: `refcount_bits=${bits}`, cluster: 65536 });
}
cases.push({ name: "lazy_refcounts", opts: "lazy_refcounts=on", cluster: 65536 });
for (const p of ["metadata", "falloc", "full"]) {
  cases.push({ name: `preallocation=${p}`, opts: `preallocation=${p}`, cluster: 65536 });
}

describe.skipIf(!have)("qcow2 written by QEMU reads identically in qimg", () => {
  for (const c of cases) {
    it(c.name, async () => {
      const img = t.path(`${c.name.replace(/[^a-z0-9]/gi, "_")}.qcow2`);
      runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", c.opts, img, String(SIZE)]);
      fill(img, c.cluster);
      const expected = qemuDecode(img, "qcow2", `${img}.raw`);
      const got = await qimgDecode(img);
      expect(got.length).toBe(SIZE);
      expect(sha256(got)).toBe(sha256(expected));
    });
  }

  it("backing chain raw ← qcow2 ← qcow2 with a shorter base", async () => {
    const base = t.path("chain-base.raw");
    const mid = t.path("chain-mid.qcow2");
    const top = t.path("chain-top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "raw", base, "4M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0xa1 0 4M", base]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "chain-base.raw", "-F", "raw", mid, "6M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0xb2 1M 512k", "-c", "write -z 2M 64k", mid]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top, "8M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0xc3 1280k 4k", "-c", "discard 0 64k", top]);
    const expected = qemuDecode(top, "qcow2", `${top}.raw`);
    expect(sha256(await qimgDecode(top))).toBe(sha256(expected));
    expect(readFileSync(`${top}.raw`).length).toBe(8 << 20);
  });
});
