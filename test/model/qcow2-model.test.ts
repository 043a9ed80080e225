/**
 * Model-based random test (fast-check): random write / compressed cluster write / writeZeroes /
 * discard / flush / reopen sequences, interleaved with internal snapshot create / apply / delete, on a qimg-opened qcow2,
 * checked against a plain in-memory model (one buffer per snapshot), then `qemu-img check`
 * (clean), `qemu-img compare` (equal to the model) and `qemu-img convert -l` of every snapshot.
 */
import { readFileSync, writeFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { create, type Image, open } from "../../ts/index.js";
import { hasPeer, qemuCheck, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const t = tempDir();
afterAll(() => t.cleanup());

const SIZE = 2 << 20;

type Op =
  | { kind: "write"; off: number; len: number; byte: number }
  | { kind: "compressed"; cluster: number; byte: number; noise: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  | { kind: "flush" }
  | { kind: "reopen" }
  | { kind: "snapCreate" }
  | { kind: "snapApply"; pick: number }
  | { kind: "snapDelete"; pick: number };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 300_000 }))
  .map(([off, len]) => ({ off, len: Math.min(len, SIZE - off) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(range, fc.integer({ min: 1, max: 255 }))
      .map(([r, byte]) => ({ kind: "write" as const, ...r, byte })),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })),
  },
  { weight: 2, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.nat(1023), fc.integer({ min: 1, max: 255 }), fc.nat(64))
      .map(([cluster, byte, noise]) => ({ kind: "compressed" as const, cluster, byte, noise })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "reopen" as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: "snapCreate" as const }) },
  { weight: 1, arbitrary: fc.nat(7).map((pick) => ({ kind: "snapApply" as const, pick })) },
  { weight: 1, arbitrary: fc.nat(7).map((pick) => ({ kind: "snapDelete" as const, pick })) },
);

describe.skipIf(!have)("qcow2 model-based random operations", () => {
  it("matches the model, and QEMU agrees", async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(512, 4096, 65536),
        fc.constantFrom("0.10", "1.1"),
        fc.boolean(),
        fc.array(op, { minLength: 1, maxLength: 25 }),
        async (cluster, compat, lazy, ops) => {
          const file = t.path(`model-${n++}.qcow2`);
          const options: Record<string, string> = { cluster_size: String(cluster), compat };
          if (lazy && compat === "1.1") options.lazy_refcounts = "on";
          await create(file, { format: "qcow2", size: SIZE, options });
          const model = Buffer.alloc(SIZE);
          const snaps: Array<{ id: string; data: Buffer }> = [];
          let img: Image = await open(file, { format: "qcow2" });
          try {
            for (const o of ops) {
              if (o.kind === "write") {
                await img.write(o.off, Buffer.alloc(o.len, o.byte));
                model.fill(o.byte, o.off, o.off + o.len);
              } else if (o.kind === "compressed") {
                // A whole cluster: a byte pattern with `noise` scattered bytes (some compress to
                // a few bytes, some barely).
                const at = (o.cluster % (SIZE / cluster)) * cluster;
                const data = Buffer.alloc(cluster, o.byte);
                for (let i = 0; i < o.noise * 8; i++)
                  data[(i * 7919 + o.byte) % cluster] = (i * 31 + o.noise) & 255;
                await img.writeCompressed(at, data);
                data.copy(model, at);
              } else if (o.kind === "zero") {
                await img.writeZeroes(o.off, o.len, { mayUnmap: o.unmap });
                model.fill(0, o.off, o.off + o.len);
              } else if (o.kind === "discard") {
                await img.discard(o.off, o.len);
                const a = Math.ceil(o.off / cluster) * cluster;
                const b = Math.floor((o.off + o.len) / cluster) * cluster;
                if (b > a) model.fill(0, a, b);
              } else if (o.kind === "flush") {
                await img.flush();
              } else if (o.kind === "snapCreate") {
                const s = await img.snapshotCreate(`s${snaps.length}`);
                snaps.push({ id: s.id, data: Buffer.from(model) });
              } else if (o.kind === "snapApply") {
                if (snaps.length === 0) continue;
                const s = snaps[o.pick % snaps.length];
                await img.snapshotApply(s.id);
                s.data.copy(model);
              } else if (o.kind === "snapDelete") {
                if (snaps.length === 0) continue;
                const [s] = snaps.splice(o.pick % snaps.length, 1);
                await img.snapshotDelete({ id: s.id });
              } else {
                await img.close();
                img = await open(file, { format: "qcow2" });
              }
            }
            expect((await img.read(0, SIZE)).equals(model)).toBe(true);
          } finally {
            await img.close();
          }
          const c = qemuCheck(file);
          expect(c.json).not.toHaveProperty("leaks");
          expect(c.json).not.toHaveProperty("corruptions");
          expect(c.status).toBe(0);
          const raw = `${file}.raw`;
          writeFileSync(raw, model);
          const cmp = run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", file, raw]);
          expect(cmp.status).toBe(0);
          for (const s of snaps) {
            const out = `${file}.${s.id}.raw`;
            runOk("qemu-img", ["convert", "-l", `snapshot.id=${s.id}`, "-O", "raw", file, out]);
            expect(readFileSync(out).equals(s.data), `snapshot ${s.id}`).toBe(true);
          }
        },
      ),
      { numRuns: 30, seed: 20261125 },
    );
  });
});
