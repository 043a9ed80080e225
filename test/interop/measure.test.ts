/**
 * `measure` against qemu-img 10: the size arithmetic over many (size, cluster_size,
 * refcount_bits, extended_l2, preallocation, compat) combinations, and the CLI's JSON and human
 * output from `--size` and from images (raw and qcow2 sources and targets, backing chains).
 */
import { afterAll, describe, expect, it } from "vitest";
import { qcow2Target } from "../../ts/jobs/measure.js";
import { qcow2Measure, rawMeasure } from "../../ts/jobs/measure-math.js";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

function qemuMeasure(args: string[]): Record<string, number> {
  return JSON.parse(runOk("qemu-img", ["measure", "--output=json", ...args]));
}

const SIZES = [0n, 1n, 512n, 65537n, 7777777n, 1n << 30n, 100n << 30n, 1n << 40n, 3n << 50n];
const GEOMS = [
  "cluster_size=512",
  "cluster_size=4k,refcount_bits=1",
  "cluster_size=64k,refcount_bits=64",
  "cluster_size=2M,refcount_bits=8",
  "cluster_size=16k,extended_l2=on",
  "cluster_size=128k,refcount_bits=2,preallocation=metadata",
  "preallocation=full,refcount_bits=4",
  "preallocation=falloc,extended_l2=on",
  "compat=0.10",
  "refcount_bits=32,cluster_size=1k",
];
const opts = (g: string) => Object.fromEntries(g.split(",").map((kv) => kv.split("=") as [string, string]));

describe.skipIf(!have)("measure vs qemu-img", () => {
  it("qcow2 arithmetic equals qemu-img measure --size over 90 combinations", () => {
    let n = 0;
    for (const g of GEOMS) {
      const geo = qcow2Target(opts(g));
      for (const s of SIZES) {
        const r = run("qemu-img", ["measure", "--output=json", "--size", String(s), "-O", "qcow2", "-o", g]);
        if (r.status !== 0) continue; // too large for this cluster size (checked through the CLI below)
        const q = JSON.parse(r.stdout);
        const ours = qcow2Measure(s, 0n, geo, geo.prealloc);
        expect([String(ours.required), String(ours.fullyAllocated)], `${g} ${s}`).toEqual([
          String(q.required),
          String(q["fully-allocated"]),
        ]);
        n++;
      }
    }
    expect(n).toBeGreaterThan(70);
  });

  it("raw arithmetic equals qemu-img measure --size", () => {
    for (const s of [0n, 1n, 511n, 513n, 1n << 30n]) {
      const q = qemuMeasure(["--size", String(s), "-O", "raw"]);
      const ours = rawMeasure(s, false);
      expect([Number(ours.required), Number(ours.fullyAllocated)]).toEqual([
        q.required,
        q["fully-allocated"],
      ]);
    }
  });

  it("CLI --size JSON and human output equal qemu-img's", () => {
    const cases = [
      ["--size", "1G", "-O", "qcow2"],
      ["--size", "1G", "-O", "qcow2", "-o", "cluster_size=4k,refcount_bits=1"],
      ["--size", "10G", "-O", "qcow2", "-o", "preallocation=full"],
      ["--size", "1000", "-O", "raw"],
      ["--size", "5M", "-O", "raw", "-o", "preallocation=full"],
      ["--size", "1G", "-O", "qcow2", "-o", "compat=0.10", "-o", "lazy_refcounts=on"],
      ["--size", "1G", "-O", "qcow2", "-o", "backing_file=x,backing_fmt=raw"],
      ["--size", "1G", "-O", "qcow2", "-o", "encrypt.format=aes"],
      ["--size", "1G", "-O", "qcow2", "-o", "data_file=x,compression_type=zstd"],
    ];
    for (const c of cases) {
      for (const out of [["--output=json"], []]) {
        const q = run("qemu-img", ["measure", ...out, ...c]);
        const r = qimg(["measure", ...out, ...c]);
        expect(r.status, r.stderr).toBe(q.status);
        expect(r.stdout).toBe(q.stdout);
      }
    }
  });

  it("CLI from images (raw and qcow2 sources, chains, -o) equals qemu-img's JSON", () => {
    const q1 = t.path("src.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", q1, "100M"]);
    runOk("qemu-io", [
      "-f",
      "qcow2",
      "-c",
      "write -P 1 0 3M",
      "-c",
      "write -z 10M 1M",
      "-c",
      "write -P 2 50M 5k",
      q1,
    ]);
    const raw = t.path("src.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", raw, "20M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 3 1M 100k", "-c", "write -P 4 7M 4k", raw]);
    const top = t.path("top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", q1, "-F", "qcow2", top]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 5 60M 1M", "-c", "write -z 0 64k", top]);
    const v2 = t.path("v2.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "30M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 6 1M 1M", v2]);
    const cases: string[][] = [];
    for (const src of [["-f", "qcow2", q1], [q1], ["-f", "raw", raw], [top], ["-f", "qcow2", v2]]) {
      for (const target of [
        ["-O", "qcow2"],
        ["-O", "raw"],
        ["-O", "qcow2", "-o", "cluster_size=512"],
        ["-O", "qcow2", "-o", "cluster_size=2M,refcount_bits=64"],
        ["-O", "qcow2", "-o", "compat=0.10"],
        ["-O", "qcow2", "-o", "preallocation=falloc"],
        ["-O", "qcow2", "-o", "backing_file=b.qcow2,backing_fmt=qcow2"],
        ["-O", "qcow2", "-o", "extended_l2=on,cluster_size=32k"],
      ]) {
        cases.push([...target, ...src]);
      }
    }
    for (const c of cases) {
      const q = qemuMeasure(["-U", ...c]);
      const r = qimg(["measure", "--output=json", "-U", ...c]);
      expect(r.status, `${c.join(" ")}: ${r.stderr}`).toBe(0);
      expect(JSON.parse(r.stdout), c.join(" ")).toEqual(q);
    }
    expect(cases.length).toBeGreaterThanOrEqual(20);
  });

  it("a source with persistent bitmaps: the bitmaps field equals qemu-img's", () => {
    const f = t.path("bitmaps.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", f, "100M"]);
    runOk("qemu-img", ["bitmap", "--add", "-g", "64k", f, "b1"]);
    runOk("qemu-img", ["bitmap", "--add", "-g", "4k", f, "b2"]);
    for (const c of ["512", "64k", "2M"]) {
      const args = ["measure", "--output=json", "-O", "qcow2", "-o", `cluster_size=${c}`, f];
      const ours = qimg(args);
      expect(ours.status, ours.stderr).toBe(0);
      expect(JSON.parse(ours.stdout)).toEqual(JSON.parse(runOk("qemu-img", args)));
    }
  });

  it("errors: exit code and message equal qemu-img's", () => {
    const cases = [
      [],
      ["--size", "1G", "x.img"],
      ["a", "b"],
      ["--size", "1G", "-f", "raw"],
      ["--size", "abc"],
      ["--size", "1G", "-O", "qcow2", "-o", "cluster_size=1000"],
      ["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=3"],
      ["--size", "1G", "-O", "qcow2", "-o", "compat=0.10,refcount_bits=8"],
      ["--size", "1G", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=4k"],
      ["--size", "1G", "-O", "qcow2", "-o", "preallocation=bogus"],
      ["--size", "1G", "-O", "qcow2", "-o", "compat=2"],
      ["--size", "1G", "-O", "qcow2", "-o", "foo=1"],
      ["--size", "100P", "-O", "qcow2"],
      ["--size", "1G", "-O", "raw", "-o", "cluster_size=4k"],
      ["--size", "1G", "--output=xml"],
      ["--size", "1G", "-O", "qcow2", "-o", "extended_l2=maybe"],
      ["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=abc"],
      ["--size", "1G", "-O", "qcow2", "-o", "cluster_size=abc"],
    ];
    for (const c of cases) {
      const q = run("qemu-img", ["measure", ...c]);
      const r = qimg(["measure", ...c]);
      expect(r.status, c.join(" ")).toBe(q.status);
      // Every line, with the program name as prefix where qemu-img puts its own.
      // (qimg leaves out the "Try 'qemu-img measure --help'" hint of usage errors, as for every command.)
      const want = q.stderr.replace(/^Try 'qemu-img measure --help' for more info\n/m, "");
      expect(r.stderr.replace(/^qimg: /gm, "qemu-img: "), c.join(" ")).toBe(want);
    }
  });
});
