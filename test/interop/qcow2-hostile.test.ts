/**
 * Hostile qcow2 headers through the public API: each malformed field gives a typed error
 * (`error.code`), never a crash, a hang or an unbounded allocation. (The Rust driver has its own,
 * longer list in crates/qimg-formats/tests.)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { create, open } from "../../ts/index.js";
import { tempDir } from "../helpers/peers.js";

const t = tempDir();
afterAll(() => t.cleanup());

type Patch = (h: DataView, file: Buffer) => void;

const be64 = (h: DataView, off: number, v: bigint) => h.setBigUint64(off, v);
const be32 = (h: DataView, off: number, v: number) => h.setUint32(off, v);

const cases: Array<{ name: string; patch: Patch; code: string; writable?: boolean }> = [
  { name: "version 1", patch: (h) => be32(h, 4, 1), code: "ERR_QIMG_UNSUPPORTED" },
  { name: "version 4", patch: (h) => be32(h, 4, 4), code: "ERR_QIMG_UNSUPPORTED" },
  { name: "cluster_bits 8", patch: (h) => be32(h, 20, 8), code: "ERR_QIMG_CORRUPT" },
  { name: "cluster_bits 22", patch: (h) => be32(h, 20, 22), code: "ERR_QIMG_CORRUPT" },
  { name: "huge L1 size", patch: (h) => be32(h, 36, 0x7fffffff), code: "ERR_QIMG_CORRUPT" },
  { name: "L1 offset beyond 2^56", patch: (h) => be64(h, 40, 1n << 57n), code: "ERR_QIMG_CORRUPT" },
  { name: "L1 offset misaligned", patch: (h) => be64(h, 40, 0x30001n), code: "ERR_QIMG_CORRUPT" },
  { name: "refcount table huge", patch: (h) => be32(h, 56, 0x10000000), code: "ERR_QIMG_CORRUPT" },
  { name: "refcount table misaligned", patch: (h) => be64(h, 48, 0x10001n), code: "ERR_QIMG_CORRUPT" },
  { name: "too many snapshots", patch: (h) => be32(h, 60, 70000), code: "ERR_QIMG_CORRUPT" },
  { name: "unknown incompatible bit", patch: (h) => be64(h, 72, 1n << 40n), code: "ERR_QIMG_UNSUPPORTED" },
  {
    name: "AES encrypted, opened without a key",
    patch: (h) => be32(h, 32, 1),
    code: "ERR_QIMG_INVALID_ARGUMENT",
  },
  { name: "LUKS without its header extension", patch: (h) => be32(h, 32, 2), code: "ERR_QIMG_CORRUPT" },
  { name: "crypt method 3", patch: (h) => be32(h, 32, 3), code: "ERR_QIMG_UNSUPPORTED" },
  { name: "external data file bit", patch: (h) => be64(h, 72, 1n << 2n), code: "ERR_QIMG_UNSUPPORTED" },
  {
    name: "extended L2 with 256-byte subclusters",
    patch: (h) => {
      be64(h, 72, 1n << 4n);
      be32(h, 20, 13);
    },
    code: "ERR_QIMG_CORRUPT",
  },
  {
    name: "corrupt bit, writable",
    patch: (h) => be64(h, 72, 1n << 1n),
    code: "ERR_QIMG_CORRUPT",
    writable: true,
  },
  {
    name: "backing name too long",
    patch: (h) => {
      be64(h, 8, 0x200n);
      be32(h, 16, 5000);
    },
    code: "ERR_QIMG_CORRUPT",
  },
  {
    name: "backing name past the header cluster",
    patch: (h) => {
      be64(h, 8, 0x1fff0n);
      be32(h, 16, 100);
    },
    code: "ERR_QIMG_CORRUPT",
  },
  { name: "header_length too small", patch: (h) => be32(h, 100, 50), code: "ERR_QIMG_CORRUPT" },
  { name: "size overflow", patch: (h) => be64(h, 24, 0xffffffffffffff00n), code: "ERR_QIMG_CORRUPT" },
  { name: "truncated header", patch: () => undefined, code: "ERR_QIMG_CORRUPT" },
];

describe("hostile qcow2 headers are rejected with typed errors", () => {
  for (const c of cases) {
    it(c.name, async () => {
      const file = t.path(`${c.name.replace(/[^a-z0-9]/gi, "_")}.qcow2`);
      await create(file, { format: "qcow2", size: 64 << 20 });
      let buf = readFileSync(file);
      if (c.name === "truncated header") buf = buf.subarray(0, 40);
      else c.patch(new DataView(buf.buffer, buf.byteOffset, buf.byteLength), buf);
      writeFileSync(file, buf);
      const err = await open(file, { format: "qcow2", readOnly: !c.writable }).then(
        async (img) => {
          await img.close();
          return null;
        },
        (e) => e,
      );
      expect(err, "open should fail").not.toBeNull();
      expect(err.code).toBe(c.code);
      expect(err.path).toBe(file);
    });
  }
});
