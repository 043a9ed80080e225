/**
 * `amend` against qemu-img 10 on copies of the same images: each option (compat both ways,
 * lazy_refcounts, refcount_bits, size, combinations, with zero clusters, compressed clusters and
 * a backing file), then qemu-img check, compare with qemu-img's amended copy, `info --output=json`
 * (format-specific fields and all) and `map` equal; refused options with qemu-img's exit code
 * and messages; `-o help`.
 */
import { copyFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qemuCheck, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

let n = 0;
function image(create: string[], io: string[]): string {
  const f = t.path(`src${++n}.qcow2`);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", ...create, f, ...(create.includes("-b") ? [] : ["64M"])]);
  runOk("qemu-io", ["-f", "qcow2", ...io.flatMap((c) => ["-c", c]), f]);
  return f;
}

const IO = [
  "write -P 1 0 1M",
  "write -z 2M 1M",
  "write -z -u 0 64k",
  "write -c -P 3 5M 64k",
  "write -P 4 9M 10k",
];

function infoWithoutNames(f: string): Record<string, unknown> {
  const i = JSON.parse(runOk("qemu-img", ["info", "--output=json", f]));
  delete i.filename;
  delete i["actual-size"];
  delete i.children;
  return i;
}

function mapWithoutOffsets(f: string): unknown[] {
  return JSON.parse(runOk("qemu-img", ["map", "--output=json", f])).map((e: Record<string, unknown>) => {
    const { offset: _o, ...rest } = e;
    return rest;
  });
}

describe.skipIf(!have)("amend vs qemu-img", () => {
  const v3 = () => image([], IO);
  const v2 = () => image(["-o", "compat=0.10"], ["write -P 1 0 1M", "write -c -P 3 5M 64k"]);
  const withBacking = () => {
    const base = image(["-o", "cluster_size=4k"], ["write -P 7 0 4M"]);
    return image(["-b", base, "-F", "qcow2"], ["write -z 1M 1M", "write -P 9 3M 64k"]);
  };
  const cases: Array<[string, () => string, string]> = [
    ["downgrade to 0.10 (zero clusters dropped)", v3, "compat=0.10"],
    ["downgrade spelled v2", v3, "compat=v2"],
    ["downgrade with a backing file (zero clusters written)", withBacking, "compat=0.10"],
    ["downgrade of a lazy-refcounts image", () => image(["-o", "lazy_refcounts=on"], IO), "compat=0.10"],
    ["upgrade to 1.1", v2, "compat=1.1"],
    ["upgrade with lazy refcounts and 2-bit refcounts", v2, "compat=1.1,lazy_refcounts=on,refcount_bits=2"],
    ["lazy_refcounts on", v3, "lazy_refcounts=on"],
    ["lazy_refcounts off", () => image(["-o", "lazy_refcounts=on"], IO), "lazy_refcounts=off"],
    ["refcount_bits=1", v3, "refcount_bits=1"],
    ["refcount_bits=64", v3, "refcount_bits=64"],
    [
      "refcount_bits=8 with 512-byte clusters",
      () => image(["-o", "cluster_size=512"], IO),
      "refcount_bits=8",
    ],
    ["refcount_bits back to 16", () => image(["-o", "refcount_bits=4"], IO), "refcount_bits=16"],
    ["size grows", v3, "size=128M"],
    ["size shrinks", v3, "size=4M"],
    ["size and downgrade", v3, "size=100M,compat=0.10"],
    ["same compat (no-op)", v3, "compat=1.1"],
    [
      "lazy overlay: size, then downgrade (the dirty bit must not outlive the v3 header)",
      () => {
        const base = image([], ["write -P 7 0 4M"]);
        return image(
          ["-b", base, "-F", "qcow2", "-o", "lazy_refcounts=on"],
          ["write -z 1M 1M", "write -P 9 3M 64k"],
        );
      },
      "size=80M,compat=0.10",
    ],
  ];
  for (const [name, make, opts] of cases) {
    it(name, () => {
      const src = make();
      const ours = `${src}.qimg`;
      const theirs = `${src}.qemu`;
      copyFileSync(src, ours);
      copyFileSync(src, theirs);
      const q = run("qemu-img", ["amend", "-f", "qcow2", "-o", opts, theirs]);
      expect(q.status, q.stderr).toBe(0);
      const r = qimg(["amend", "-f", "qcow2", "-o", opts, ours]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(q.stdout);
      const c = qemuCheck(ours);
      expect(c.status, JSON.stringify(c.json)).toBe(0);
      const cmp = run("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", ours, theirs]);
      expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      if (!opts.includes("size=4M")) {
        const cmpSrc = run("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", ours, src]);
        expect(cmpSrc.status, cmpSrc.stdout).toBe(0);
      }
      const io = infoWithoutNames(ours);
      const it = infoWithoutNames(theirs);
      if (it["backing-filename"]) {
        for (const k of ["backing-filename", "full-backing-filename"]) {
          io[k] = String(io[k]).replace(/\.qimg$/, "");
          it[k] = String(it[k]).replace(/\.qemu$/, "");
        }
      }
      expect(io).toEqual(it);
      expect(mapWithoutOffsets(ours)).toEqual(mapWithoutOffsets(theirs));
    });
  }

  it("refusals: exit code and messages equal qemu-img's", () => {
    const src = v3();
    const v2src = v2();
    const r8 = image(["-o", "refcount_bits=8"], ["write -P 1 0 64k"]);
    // Two compressed clusters packed into one host cluster: refcount 2 does not fit in 1 bit.
    const packed = image([], ["write -c -P 1 0 64k", "write -c -P 2 64k 64k"]);
    const cases: Array<[string, string[]]> = [
      [src, ["-o", "cluster_size=4k"]],
      [src, ["-o", "encryption=on"]],
      [src, ["-o", "preallocation=full"]],
      [src, ["-o", "compression_type=zstd"]],
      [src, ["-o", "extended_l2=on"]],
      [src, ["-o", "foo=1"]],
      [src, ["-o", "backing_file=x.qcow2"]],
      [src, ["-o", "backing_fmt=raw"]],
      [src, ["-o", "data_file=x"]],
      [src, ["-o", "compat=2"]],
      [src, ["-o", "refcount_bits=3"]],
      [src, ["-o", "refcount_bits=128"]],
      [src, ["-o", "compat=0.10,lazy_refcounts=on"]],
      [src, ["-o", "size=abc"]],
      [v2src, ["-o", "lazy_refcounts=on"]],
      [v2src, ["-o", "refcount_bits=1"]],
      [r8, ["-o", "compat=0.10"]],
      [packed, ["-o", "refcount_bits=1"]],
      [src, []],
    ];
    for (const [f, args] of cases) {
      const ours = `${f}.r${++n}`;
      const theirs = `${f}.q${n}`;
      copyFileSync(f, ours);
      copyFileSync(f, theirs);
      const q = run("qemu-img", ["amend", "-f", "qcow2", ...args, theirs]);
      const r = qimg(["amend", "-f", "qcow2", ...args, ours]);
      expect(r.status, args.join(" ")).toBe(q.status);
      const want = q.stderr.replace("Try 'qemu-img amend --help' for more info\n", "");
      expect(r.stderr.replace(/^qimg: /, "qemu-img: "), args.join(" ")).toBe(want);
      expect(run("qemu-img", ["compare", ours, f]).status).toBe(0);
    }
    const raw = t.path("x.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", raw, "1M"]);
    const q = run("qemu-img", ["amend", "-f", "raw", "-o", "size=2M", raw]);
    const r = qimg(["amend", "-f", "raw", "-o", "size=2M", raw]);
    expect([r.status, r.stderr.replace("qimg:", "qemu-img:")]).toEqual([q.status, q.stderr]);
  });

  it("-p prints qemu-img's progress lines; -q silences them", () => {
    const src = v3();
    for (const flags of [["-p"], ["-p", "-q"]]) {
      copyFileSync(src, `${src}.p`);
      copyFileSync(src, `${src}.pq`);
      const q = run("qemu-img", ["amend", ...flags, "-o", "compat=0.10", `${src}.pq`]);
      const r = qimg(["amend", ...flags, "-o", "compat=0.10", `${src}.p`]);
      expect([r.status, r.stdout]).toEqual([q.status, q.stdout]);
    }
  });

  it("-o help lists the amendable options as qemu-img does", () => {
    const q = runOk("qemu-img", ["amend", "-f", "qcow2", "-o", "help"]);
    const r = qimg(["amend", "-f", "qcow2", "-o", "help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(q);
    const f = v3();
    expect(qimg(["amend", "-o", "help", f]).stdout).toBe(runOk("qemu-img", ["amend", "-o", "help", f]));
  });
});
