/**
 * qcow2 interop with qemu-img 7.2 (Debian bookworm's own, unpacked by test/peers/install.sh under
 * target/peers) beside the machine's qemu-img 10: images 7.2 writes read back identically in qimg
 * (contents, `check` JSON, `map` JSON but the `compressed` field 7.2 does not print), and images
 * qimg writes pass 7.2's `check` and compare equal under 7.2's `compare`.
 */
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemu72, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const img72 = qemu72("qemu-img");
const io72 = qemu72("qemu-io");
const have = hasPeer("qemu-img") && img72 !== null && io72 !== null;
const t = tempDir();
afterAll(() => t.cleanup());
const q = (args: string[]) => runOk(img72 as string, args);

/** Raw source with patterns, zeros and an unaligned tail. */
function source(name: string): string {
  const src = t.path(`${name}.raw`);
  runOk("qemu-img", ["create", "-q", "-f", "raw", src, "3000k"]);
  runOk(io72 as string, ["-f", "raw", "-c", "write -P 0x5a 0 700k", "-c", "write -P 0xa5 2M 900k", src]);
  return src;
}

const noCompressed = (m: Array<Record<string, unknown>>) => m.map(({ compressed: _c, ...rest }) => rest);

describe.skipIf(!have)("qemu-img 7.2 → qimg", () => {
  const variants: Array<[string, string[]]> = [
    ["v2", ["-o", "compat=0.10"]],
    ["v3-lazy-4k", ["-o", "lazy_refcounts=on,cluster_size=4k"]],
    ["refcount1-2M", ["-o", "refcount_bits=1,cluster_size=2M"]],
    ["zlib", ["-c"]],
    ["zstd", ["-c", "-o", "compression_type=zstd"]],
  ];
  for (const [name, extra] of variants) {
    it(`${name}: contents, check and map as 7.2 reports them`, async () => {
      const src = source(`in-${name}`);
      const f = t.path(`in-${name}.qcow2`);
      q(["convert", "-f", "raw", "-O", "qcow2", ...extra, src, f]);
      // A 7.2 write over part of the image, through its own qcow2 driver.
      runOk(io72 as string, ["-f", "qcow2", "-c", "write -P 0x77 100k 300k", f]);
      const img = await open(f, { readOnly: true });
      const ours = await img.read(0, img.virtualSize);
      await img.close();
      const dec = t.path(`in-${name}.dec`);
      q(["convert", "-f", "qcow2", "-O", "raw", f, dec]);
      expect(sha256(ours)).toBe(sha256(dec));
      expect(JSON.parse(qimg(["check", "--output=json", f]).stdout)).toEqual(
        JSON.parse(q(["check", "--output=json", f])),
      );
      expect(noCompressed(JSON.parse(qimg(["map", "--output=json", f]).stdout))).toEqual(
        JSON.parse(q(["map", "--output=json", f])),
      );
    });
  }
});

describe.skipIf(!have)("qimg → qemu-img 7.2", () => {
  const variants: Array<[string, string[]]> = [
    ["v2-512", ["-o", "compat=0.10,cluster_size=512"]],
    ["v3-64k", []],
    ["refcount64", ["-o", "refcount_bits=64"]],
    ["zlib", ["-c", "-o", "cluster_size=8k"]],
    ["zstd", ["-c", "-o", "compression_type=zstd"]],
    ["prealloc-metadata", ["-o", "preallocation=metadata"]],
  ];
  for (const [name, extra] of variants) {
    it(`${name}: 7.2 checks clean and compares equal`, () => {
      const src = source(`out-${name}`);
      const f = t.path(`out-${name}.qcow2`);
      const r = qimg(["convert", "-f", "raw", "-O", "qcow2", ...extra, src, f]);
      expect(r.status, r.stderr).toBe(0);
      expect(run(img72 as string, ["check", f]).status).toBe(0);
      expect(run(img72 as string, ["compare", "-f", "raw", "-F", "qcow2", src, f]).status).toBe(0);
    });
  }

  it("snapshots, bitmaps, extended L2, a data file, amend and resize made by qimg", async () => {
    const src = source("features");
    const cases: Array<[string, string[], (f: string) => void]> = [
      [
        "snapshots",
        [],
        (f) => {
          expect(qimg(["snapshot", "-c", "one", f]).status).toBe(0);
          expect(q(["snapshot", "-l", f])).toContain("one");
        },
      ],
      [
        "bitmaps",
        [],
        (f) => {
          expect(qimg(["bitmap", "--add", "-g", "64k", f, "b0"]).status).toBe(0);
          expect(JSON.parse(q(["info", "--output=json", f]))["format-specific"].data.bitmaps[0].name).toBe(
            "b0",
          );
        },
      ],
      ["extended-l2", ["-o", "extended_l2=on"], () => undefined],
      [
        "amend-refcount-bits",
        [],
        (f) => {
          expect(qimg(["amend", "-o", "refcount_bits=64,lazy_refcounts=on", f]).status).toBe(0);
        },
      ],
      [
        "resize",
        [],
        (f) => {
          expect(qimg(["resize", f, "+1M"]).status).toBe(0);
          runOk("qemu-img", ["resize", "-f", "raw", src, "+1M"]);
        },
      ],
    ];
    for (const [name, extra, then] of cases) {
      const f = t.path(`feat-${name}.qcow2`);
      const r = qimg(["convert", "-f", "raw", "-O", "qcow2", ...extra, src, f]);
      expect(r.status, r.stderr).toBe(0);
      then(f);
      expect(run(img72 as string, ["check", f]).status, name).toBe(0);
      expect(run(img72 as string, ["compare", "-f", "raw", "-F", "qcow2", src, f]).status, name).toBe(0);
    }
    // A data file: qimg creates and writes it, 7.2 reads the same bytes.
    const df = t.path("df.qcow2");
    expect(
      qimg(["create", "-q", "-f", "qcow2", "-o", `data_file=${t.path("df.data")}`, df, "2M"]).status,
    ).toBe(0);
    const img = await open(df);
    await img.write(12345, Buffer.alloc(100_000, 0x42));
    await img.close();
    expect(run(img72 as string, ["check", df]).status).toBe(0);
    const dec = t.path("df.dec");
    q(["convert", "-O", "raw", df, dec]);
    const want = Buffer.alloc(2 << 20);
    want.fill(0x42, 12345, 112345);
    expect(sha256(readFileSync(dec))).toBe(sha256(want));
  });

  it("a chain rebased and committed by qimg", () => {
    const base = t.path("chain-base.qcow2");
    const top = t.path("chain-top.qcow2");
    q(["create", "-q", "-f", "qcow2", base, "2M"]);
    runOk(io72 as string, ["-f", "qcow2", "-c", "write -P 1 0 1M", base]);
    q(["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
    runOk(io72 as string, ["-f", "qcow2", "-c", "write -P 2 512k 1M", top]);
    const expected = t.path("chain.raw");
    q(["convert", "-O", "raw", top, expected]);
    expect(qimg(["commit", top]).status).toBe(0);
    expect(run(img72 as string, ["check", base]).status).toBe(0);
    expect(run(img72 as string, ["check", top]).status).toBe(0);
    expect(run(img72 as string, ["compare", "-F", "raw", top, expected]).status).toBe(0);
    expect(qimg(["rebase", "-b", "", top]).status).toBe(0);
    expect(run(img72 as string, ["check", top]).status).toBe(0);
    expect(run(img72 as string, ["compare", "-F", "raw", top, expected]).status).toBe(0);
  });
});
