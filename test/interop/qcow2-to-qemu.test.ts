/**
 * qimg → QEMU: images qimg creates and writes pass `qemu-img check` (no errors, no leaks),
 * `qemu-img compare` equal to the expected contents, and `qemu-img info --output=json` agrees
 * with qimg's `info` on every shared field.
 */
import { statSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { create, info, open } from "../../ts/index.js";
import { hasPeer, qemuCheck, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const t = tempDir();
afterAll(() => t.cleanup());

const SIZE = 6 << 20;

/** Write a fixed pattern set through qimg and return the expected raw contents. */
async function scribble(file: string, cluster: number, base?: Buffer): Promise<Buffer> {
  const model = base
    ? Buffer.concat([base, Buffer.alloc(Math.max(0, SIZE - base.length))]).subarray(0, SIZE)
    : Buffer.alloc(SIZE);
  const img = await open(file, { format: "qcow2" });
  try {
    const ops: Array<[string, number, number, number]> = [
      ["w", 0, 4096, 0x11],
      ["w", 65536 - 100, 300, 0x22],
      ["w", 200_000, 1 << 20, 0x33],
      ["z", 300_000, 70_000, 0],
      ["w", 3 << 20, 2 << 20, 0x44],
      ["d", 3 << 20, 1 << 20, 0],
      ["w", SIZE - 512, 512, 0x55],
      ["z", 5 << 20, 512 << 10, 0],
    ];
    for (const [op, off, len, v] of ops) {
      if (op === "w") {
        await img.write(off, Buffer.alloc(len, v));
        model.fill(v, off, off + len);
      } else if (op === "z") {
        await img.writeZeroes(off, len, { mayUnmap: true });
        model.fill(0, off, off + len);
      } else {
        await img.discard(off, len);
        // As QEMU: only whole clusters are discarded, and on a v3 image they then read as zeros
        // (with or without a backing file).
        const a = Math.ceil(off / cluster) * cluster;
        const b = Math.floor((off + len) / cluster) * cluster;
        if (b > a) model.fill(0, a, b);
      }
    }
  } finally {
    await img.close();
  }
  return model;
}

function expectClean(file: string): void {
  const c = qemuCheck(file);
  expect(c.json).not.toHaveProperty("leaks");
  expect(c.json).not.toHaveProperty("corruptions");
  expect(c.status).toBe(0);
}

function expectSame(file: string, model: Buffer, name: string): void {
  const raw = t.path(`${name}.expected.raw`);
  writeFileSync(raw, model);
  const r = run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", file, raw]);
  expect(r.stdout + r.stderr).toContain("Images are identical");
  expect(r.status).toBe(0);
}

const variants: Array<Record<string, string>> = [
  {},
  { compat: "0.10" },
  { cluster_size: "512" },
  { cluster_size: "4k" },
  { cluster_size: "2M" },
  { refcount_bits: "1" },
  { refcount_bits: "8" },
  { refcount_bits: "64" },
  { lazy_refcounts: "on" },
  { preallocation: "metadata" },
  { preallocation: "falloc" },
  { preallocation: "full" },
  { compat: "0.10", cluster_size: "1k" },
];

describe.skipIf(!have)("qcow2 written by qimg passes qemu-img check and compare", () => {
  for (const v of variants) {
    const name =
      Object.entries(v)
        .map(([k, x]) => `${k}=${x}`)
        .join(",") || "defaults";
    it(name, async () => {
      const file = t.path(`${name.replace(/[^a-z0-9]/gi, "_")}.qcow2`);
      await create(file, { format: "qcow2", size: SIZE, options: v });
      // A new image has qemu-img's file length (QEMU writes only the L1 table's bytes).
      const ref = t.path(`${name.replace(/[^a-z0-9]/gi, "_")}.ref.qcow2`);
      const opts = Object.entries(v).map(([k, x]) => `${k}=${x}`);
      runOk("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        ...(opts.length ? ["-o", opts.join(",")] : []),
        ref,
        String(SIZE),
      ]);
      expect(statSync(file).size).toBe(statSync(ref).size);
      const cluster = { "512": 512, "4k": 4096, "2M": 2 << 20, "1k": 1024 }[v.cluster_size ?? ""] ?? 65536;
      const model = await scribble(file, cluster);
      expectClean(file);
      expectSame(file, model, name.replace(/[^a-z0-9]/gi, "_"));
      const q = JSON.parse(runOk("qemu-img", ["info", "--output=json", file]));
      const [m] = await info(file);
      for (const k of [
        "virtual-size",
        "format",
        "cluster-size",
        "format-specific",
        "dirty-flag",
        "actual-size",
        "filename",
      ]) {
        expect([k, (m as unknown as Record<string, unknown>)[k]]).toEqual([k, q[k]]);
      }
      expect(m.children[0].info["virtual-size"]).toBe(q.children[0].info["virtual-size"]);
    });
  }

  it("overlay on a qemu-made base: backing fields and contents agree", async () => {
    const base = t.path("b-base.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, String(SIZE)]);
    runOk("qemu-io", ["-f", "qcow2", "-c", `write -P 0x77 0 ${SIZE}`, base]);
    const top = t.path("b-top.qcow2");
    await create(top, { format: "qcow2", backingFile: "b-base.qcow2", backingFormat: "qcow2" });
    const model = await scribble(top, 65536, Buffer.alloc(SIZE, 0x77));
    expectClean(top);
    expectSame(top, model, "b-top");
    const q = JSON.parse(runOk("qemu-img", ["info", "--output=json", top]));
    const [m] = await info(top);
    for (const k of [
      "backing-filename",
      "full-backing-filename",
      "backing-filename-format",
      "virtual-size",
    ]) {
      expect([k, (m as unknown as Record<string, unknown>)[k]]).toEqual([k, q[k]]);
    }
  });
});
