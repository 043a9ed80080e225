/**
 * Model-based random test (fast-check) for vdi (dynamic, static) and vpc (dynamic, fixed):
 * random write / writeZeroes / discard / flush / reopen sequences, and bursts of concurrent
 * writes to disjoint ranges, on a qimg-created image opened through the library, checked against
 * an in-memory model; then `qemu-img check` (vdi: clean) and `qemu-img compare` with the model.
 */
import { writeFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { create, type Image, open } from "../../ts/index.js";
import { hasPeer, run, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const t = tempDir();
afterAll(() => t.cleanup());

// 5 MiB + 3 KiB: several VDI (1 MiB) and VHD (2 MiB) blocks and a partial last one.
const SIZE = (5 << 20) + 3072;

type Op =
  | { kind: "write"; off: number; len: number; byte: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  | { kind: "burst"; byte: number; offs: number[] }
  | { kind: "flush" }
  | { kind: "reopen" };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 2_500_000 }))
  .map(([off, len]) => ({ off, len: Math.min(len, SIZE - off) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(range, fc.integer({ min: 0, max: 255 }))
      .map(([r, byte]) => ({ kind: "write" as const, ...r, byte })),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })),
  },
  { weight: 1, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.integer({ min: 1, max: 255 }), fc.uniqueArray(fc.nat(9), { minLength: 2, maxLength: 6 }))
      .map(([byte, slots]) => ({ kind: "burst" as const, byte, offs: slots.map((s) => s * 524288 + 1000) })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "reopen" as const }) },
);

const variants: Array<[string, Record<string, string>]> = [
  ["vdi", { static: "off" }],
  ["vdi", { static: "on" }],
  ["vpc", { subformat: "dynamic", force_size: "on" }],
  ["vpc", { subformat: "fixed", force_size: "on" }],
];

describe.skipIf(!have)("vdi and vpc model-based random operations", () => {
  for (const [format, options] of variants) {
    it(`${format} ${JSON.stringify(options)} matches the model, and QEMU agrees`, async () => {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
          const file = t.path(`model-${format}-${n++}.img`);
          await create(file, { format, size: SIZE, options });
          const model = Buffer.alloc(SIZE);
          let img: Image = await open(file, { format });
          expect(img.virtualSize).toBe(SIZE);
          try {
            for (const o of ops) {
              if (o.kind === "write") {
                await img.write(o.off, Buffer.alloc(o.len, o.byte));
                model.fill(o.byte, o.off, o.off + o.len);
              } else if (o.kind === "zero") {
                await img.writeZeroes(o.off, o.len, { mayUnmap: o.unmap });
                model.fill(0, o.off, o.off + o.len);
              } else if (o.kind === "discard") {
                await img.discard(o.off, o.len);
                model.fill(0, o.off, o.off + o.len);
              } else if (o.kind === "burst") {
                // Concurrent writes to disjoint 300 KiB ranges (several may allocate one block).
                const live = o.offs.filter((off) => off + 300_000 <= SIZE);
                await Promise.all(live.map((off, i) => img.write(off, Buffer.alloc(300_000, o.byte + i))));
                for (const [i, off] of live.entries()) model.fill(o.byte + i, off, off + 300_000);
              } else if (o.kind === "flush") {
                await img.flush();
              } else {
                await img.close();
                img = await open(file, { format });
              }
            }
            expect((await img.read(0, SIZE)).equals(model)).toBe(true);
          } finally {
            await img.close();
          }
          if (format === "vdi") {
            const c = run("qemu-img", ["check", "-f", "vdi", file]);
            expect(c.status, c.stderr).toBe(0);
          }
          const raw = `${file}.raw`;
          writeFileSync(raw, model);
          const cmp = run("qemu-img", ["compare", "-f", format, "-F", "raw", file, raw]);
          expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
        }),
        { numRuns: 12, seed: 20261125 },
      );
    });
  }
});
