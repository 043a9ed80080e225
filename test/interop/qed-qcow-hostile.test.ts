/**
 * Hostile qed and qcow (v1) headers through the public API: each malformed field gives a typed
 * error (`error.code`), never a crash, a hang or an unbounded allocation. (The Rust drivers have
 * longer lists in crates/qimg-formats/tests/{qed,qcow}_hostile.rs.)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { create, open } from "../../ts/index.js";
import { tempDir } from "../helpers/peers.js";

const t = tempDir();
afterAll(() => t.cleanup());

type Patch = (b: Buffer) => void;

const qed: Array<[string, Patch, string]> = [
  ["bad magic", (b) => b.write("XED", 0), "ERR_QIMG_WRONG_FORMAT"],
  ["unknown feature", (b) => b.writeBigUInt64LE(1n << 40n, 16), "ERR_QIMG_UNSUPPORTED"],
  ["cluster size 2048", (b) => b.writeUInt32LE(2048, 4), "ERR_QIMG_CORRUPT"],
  ["cluster size 128M", (b) => b.writeUInt32LE(128 << 20, 4), "ERR_QIMG_CORRUPT"],
  ["cluster size 12k", (b) => b.writeUInt32LE(12288, 4), "ERR_QIMG_CORRUPT"],
  ["table size 3", (b) => b.writeUInt32LE(3, 8), "ERR_QIMG_CORRUPT"],
  ["table size 32", (b) => b.writeUInt32LE(32, 8), "ERR_QIMG_CORRUPT"],
  ["header size 0", (b) => b.writeUInt32LE(0, 12), "ERR_QIMG_CORRUPT"],
  ["image size unaligned", (b) => b.writeBigUInt64LE((8n << 20n) + 7n, 48), "ERR_QIMG_CORRUPT"],
  ["image size too large", (b) => b.writeBigUInt64LE(1n << 60n, 48), "ERR_QIMG_CORRUPT"],
  ["L1 past end of file", (b) => b.writeBigUInt64LE(1n << 40n, 40), "ERR_QIMG_CORRUPT"],
  ["L1 unaligned", (b) => b.writeBigUInt64LE(65536n + 8n, 40), "ERR_QIMG_CORRUPT"],
  [
    "backing name outside the header",
    (b) => {
      b.writeBigUInt64LE(1n, 16);
      b.writeUInt32LE(65000, 56);
      b.writeUInt32LE(4000, 60);
    },
    "ERR_QIMG_CORRUPT",
  ],
];

const qcow: Array<[string, Patch, string]> = [
  ["bad magic", (b) => b.writeUInt8(0x58, 0), "ERR_QIMG_WRONG_FORMAT"],
  ["version 2", (b) => b.writeUInt32BE(2, 4), "ERR_QIMG_UNSUPPORTED"],
  ["size 1", (b) => b.writeBigUInt64BE(1n, 24), "ERR_QIMG_CORRUPT"],
  ["cluster bits 8", (b) => b.writeUInt8(8, 32), "ERR_QIMG_CORRUPT"],
  ["cluster bits 17", (b) => b.writeUInt8(17, 32), "ERR_QIMG_CORRUPT"],
  ["l2 bits 5", (b) => b.writeUInt8(5, 33), "ERR_QIMG_CORRUPT"],
  ["l2 bits 14", (b) => b.writeUInt8(14, 33), "ERR_QIMG_CORRUPT"],
  ["crypt method 2", (b) => b.writeUInt32BE(2, 36), "ERR_QIMG_CORRUPT"],
  ["AES encrypted, opened without a key", (b) => b.writeUInt32BE(1, 36), "ERR_QIMG_INVALID_ARGUMENT"],
  ["image too large", (b) => b.writeBigUInt64BE(1n << 62n, 24), "ERR_QIMG_CORRUPT"],
  ["L1 past end of file", (b) => b.writeBigUInt64BE(1n << 40n, 40), "ERR_QIMG_CORRUPT"],
  [
    "backing name too long",
    (b) => {
      b.writeBigUInt64BE(48n, 8);
      b.writeUInt32BE(1024, 16);
    },
    "ERR_QIMG_CORRUPT",
  ],
];

for (const [fmt, cases] of [
  ["qed", qed],
  ["qcow", qcow],
] as const) {
  describe(`hostile ${fmt} headers are rejected with typed errors`, () => {
    for (const [name, patch, code] of cases) {
      it(name, async () => {
        const file = t.path(`${name.replace(/[^a-z0-9]/gi, "_")}.${fmt}`);
        await create(file, { format: fmt, size: 8 << 20 });
        const buf = readFileSync(file);
        patch(buf);
        writeFileSync(file, buf);
        const err = await open(file, { format: fmt, readOnly: true }).then(
          async (img) => {
            await img.close();
            return null;
          },
          (e: { code?: string }) => e,
        );
        expect(err?.code, name).toBe(code);
      });
    }
  });
}
