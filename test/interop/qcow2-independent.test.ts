/**
 * qcow2 images qimg writes, read by readers that are not QEMU: 7-Zip (`7zz -tQCOW`) and libyal's
 * libqcow (python3-libqcow). Both must decode the guest contents qimg was given. Neither reads zstd
 * clusters (libqcow refuses the compression-type incompatible bit, 7-Zip reports an unsupported
 * method), so compressed images are checked with zlib here and zstd against qemu-img elsewhere.
 */
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, hasReader, qimg, readerSha256, runOk, sha256, tempDir } from "../helpers/peers.js";

const readers = (["7zz", "pyqcow"] as const).filter((r) => hasReader(r));
const have = hasPeer("qemu-img") && hasPeer("qemu-io") && readers.length > 0;
const t = tempDir();
afterAll(() => t.cleanup());

/** A 5 MiB raw source with patterns, a zero run and a tail that is not cluster aligned. */
function source(): string {
  const src = t.path("src.raw");
  runOk("qemu-img", ["create", "-q", "-f", "raw", src, "5000k"]);
  runOk("qemu-io", [
    "-f",
    "raw",
    "-c",
    "write -P 0x11 0 1M",
    "-c",
    "write -P 0x22 1536k 333k",
    "-c",
    "write -P 0x33 4900k 100k",
    src,
  ]);
  return src;
}

describe.skipIf(!have)("independent readers decode what qimg writes", () => {
  const src = have ? source() : "";
  const want = have ? sha256(src) : "";
  const want0 = () => want;
  const cases: Array<[string, string[]]> = [
    ["v3-64k", ["-o", "compat=1.1"]],
    ["v2-4k", ["-o", "compat=0.10,cluster_size=4k"]],
    ["v3-2M-refcount1", ["-o", "cluster_size=2M,refcount_bits=1"]],
    ["zlib-compressed", ["-c"]],
    ["zlib-compressed-4k", ["-c", "-o", "cluster_size=4k"]],
    ["zlib-compressed-8k", ["-c", "-o", "cluster_size=8k"]],
  ];
  for (const [name, extra] of cases) {
    it(`convert ${name}`, () => {
      const out = t.path(`${name}.qcow2`);
      const r = qimg(["convert", "-f", "raw", "-O", "qcow2", ...extra, src, out]);
      expect(r.status, r.stderr).toBe(0);
      for (const reader of readers) expect(readerSha256(reader, out), reader).toBe(want);
    });
  }

  it("an image with internal snapshots qimg made: the active layer and each snapshot", async () => {
    const f = t.path("snaps.qcow2");
    runOk("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", src, f]);
    expect(qimg(["snapshot", "-c", "first", f]).status).toBe(0);
    const img = await open(f);
    await img.write(4096, Buffer.alloc(200_000, 0x77));
    await img.writeCompressed(2 << 20, Buffer.alloc(65536, 0x66));
    const active = await img.read(0, img.virtualSize);
    await img.close();
    expect(qimg(["snapshot", "-c", "second", f]).status).toBe(0);
    for (const reader of readers) expect(readerSha256(reader, f), reader).toBe(sha256(active));
    // Each snapshot, extracted by qimg, read back by the independent readers.
    for (const [name, want] of [
      ["first", want0()],
      ["second", sha256(active)],
    ]) {
      const out = t.path(`snap-${name}.qcow2`);
      expect(qimg(["convert", "-l", name, "-O", "qcow2", f, out]).status).toBe(0);
      for (const reader of readers) expect(readerSha256(reader, out), `${reader} ${name}`).toBe(want);
    }
  });

  it("random writes through the library, then rebase -b '' (flattened chain)", async () => {
    const base = t.path("lib-base.qcow2");
    runOk("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", src, base]);
    const top = t.path("lib-top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
    const model = Buffer.from(runOk("cat", [src]), "latin1");
    const img = await open(top);
    let seed = 99;
    for (let i = 0; i < 60; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const off = seed % (model.length - 70_000);
      const len = 1 + ((seed >>> 7) % 65_000);
      const data = Buffer.alloc(len, (seed >>> 24) | 1);
      await img.write(off, data);
      data.copy(model, off);
    }
    await img.close();
    expect(qimg(["rebase", "-b", "", top]).status).toBe(0);
    for (const reader of readers) expect(readerSha256(reader, top), reader).toBe(sha256(model));
  });
});
