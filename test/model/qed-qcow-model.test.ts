/**
 * Model-based random test (fast-check) for qed and qcow (v1): random write / writeZeroes /
 * discard / flush / reopen sequences on a qimg-opened image of random geometry (qed cluster and
 * table sizes; qcow with and without a backing file), checked against an in-memory model, then
 * `qemu-img check` (qed: clean; qcow: exit 63) and `qemu-img compare` equal to the model.
 */
import { writeFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { create, type Image, open } from "../../ts/index.js";
import { hasPeer, qemuCheck, run, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const t = tempDir();
afterAll(() => t.cleanup());

const SIZE = 3 << 20;

type Op =
  | { kind: "write"; off: number; len: number; byte: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  | { kind: "flush" }
  | { kind: "reopen" };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 300_000 }))
  .map(([off, len]) => ({ off, len: Math.min(len, SIZE - off) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(range, fc.integer({ min: 1, max: 255 }))
      .map(([r, byte]) => ({ kind: "write" as const, ...r, byte })),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })),
  },
  { weight: 1, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "reopen" as const }) },
);

/** A qed geometry QEMU opens (table_size 1 it cannot), or qcow with/without a backing file. */
const layout = fc.oneof(
  fc.record({
    fmt: fc.constant("qed" as const),
    cluster: fc.constantFrom(4096, 16384, 65536),
    table: fc.constantFrom(2, 4, 16),
    backing: fc.boolean(),
  }),
  fc.record({
    fmt: fc.constant("qcow" as const),
    cluster: fc.constant(0),
    table: fc.constant(0),
    backing: fc.boolean(),
  }),
);

describe.skipIf(!have)("qed and qcow model-based random operations", () => {
  it("matches the model, and QEMU agrees", async () => {
    let n = 0;
    const base = t.path("base.raw");
    const baseData = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i++) baseData[i] = (i >> 9) & 0xff;
    writeFileSync(base, baseData);
    await fc.assert(
      fc.asyncProperty(layout, fc.array(op, { minLength: 1, maxLength: 25 }), async (l, ops) => {
        const file = t.path(`model-${n++}.${l.fmt}`);
        const options: Record<string, string> = {};
        if (l.fmt === "qed") {
          options.cluster_size = String(l.cluster);
          options.table_size = String(l.table);
        }
        await create(file, {
          format: l.fmt,
          size: SIZE,
          options,
          ...(l.backing ? { backingFile: "base.raw", backingFormat: "raw" } : {}),
        });
        const model = l.backing ? Buffer.from(baseData) : Buffer.alloc(SIZE);
        let img: Image = await open(file, { format: l.fmt });
        try {
          for (const o of ops) {
            if (o.kind === "write") {
              await img.write(o.off, Buffer.alloc(o.len, o.byte));
              model.fill(o.byte, o.off, o.off + o.len);
            } else if (o.kind === "zero") {
              await img.writeZeroes(o.off, o.len, { mayUnmap: o.unmap });
              model.fill(0, o.off, o.off + o.len);
            } else if (o.kind === "discard") {
              // QEMU's qed and qcow ignore discard: the contents stay.
              await img.discard(o.off, o.len);
            } else if (o.kind === "flush") {
              await img.flush();
            } else {
              await img.close();
              img = await open(file, { format: l.fmt });
            }
          }
          expect((await img.read(0, SIZE)).equals(model)).toBe(true);
        } finally {
          await img.close();
        }
        const c = qemuCheck(file, l.fmt);
        expect(c.status).toBe(l.fmt === "qed" ? 0 : 63);
        const raw = `${file}.raw`;
        writeFileSync(raw, model);
        const cmp = run("qemu-img", ["compare", "-f", l.fmt, "-F", "raw", file, raw]);
        expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      }),
      { numRuns: 30, seed: 20261125 },
    );
  });
});
