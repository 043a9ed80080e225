/**
 * `resize` against qemu-img 10 on copies of the same images: grow with every preallocation mode,
 * shrink (`--shrink`), relative sizes; then qemu-img check, compare, info (virtual size, and the
 * file size where QEMU's is deterministic); error cases with qemu-img's exit codes and messages.
 */
import { statSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qemuCheck, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

let n = 0;
/** A qcow2 (or raw) image with data, zeros and a compressed cluster, and a copy of it. */
function pair(fmt: "qcow2" | "raw", opts = ""): [string, string] {
  const a = t.path(`img${++n}.${fmt}`);
  const b = t.path(`img${n}-qemu.${fmt}`);
  // Both made the same way (a file copy could lose the holes a raw image's map shows).
  for (const f of [a, b]) {
    runOk("qemu-img", ["create", "-q", "-f", fmt, ...(opts ? ["-o", opts] : []), f, "64M"]);
    const cmds = ["-c", "write -P 0x11 0 20M", "-c", "write -P 0x22 30M 3M", "-c", "write -z 40M 1M"];
    if (fmt === "qcow2") cmds.push("-c", "write -c -P 0x33 50M 64k");
    runOk("qemu-io", ["-f", fmt, ...cmds, f]);
  }
  return [a, b];
}

function virtualSize(f: string, fmt: string): number {
  return JSON.parse(runOk("qemu-img", ["info", "--output=json", "-f", fmt, f]))["virtual-size"];
}

describe.skipIf(!have)("resize vs qemu-img", () => {
  const cases: Array<[string, "qcow2" | "raw", string, string[]]> = [
    ["qcow2 grow", "qcow2", "", ["100M"]],
    ["qcow2 grow relative", "qcow2", "cluster_size=4k", ["+1G"]],
    ["qcow2 grow metadata", "qcow2", "", ["--preallocation=metadata", "80M"]],
    ["qcow2 grow falloc", "qcow2", "cluster_size=16k", ["--preallocation=falloc", "80M"]],
    ["qcow2 grow full", "qcow2", "", ["--preallocation=full", "+7M"]],
    ["qcow2 grow past the L1 table", "qcow2", "cluster_size=512", ["--preallocation=metadata", "80M"]],
    ["qcow2 shrink", "qcow2", "", ["--shrink", "10M"]],
    ["qcow2 shrink 4k clusters", "qcow2", "cluster_size=4k", ["--shrink", "31M"]],
    ["qcow2 shrink 512-byte clusters", "qcow2", "cluster_size=512,refcount_bits=1", ["--shrink", "-40M"]],
    ["qcow2 v2 shrink", "qcow2", "compat=0.10", ["--shrink", "30M"]],
    ["qcow2 lazy refcounts shrink", "qcow2", "lazy_refcounts=on", ["--shrink", "1M"]],
    ["raw grow", "raw", "", ["100M"]],
    ["raw grow falloc", "raw", "", ["--preallocation=falloc", "70M"]],
    ["raw grow full", "raw", "", ["--preallocation=full", "+3M"]],
    ["raw shrink", "raw", "", ["--shrink", "-1000"]],
  ];
  for (const [name, fmt, opts, args] of cases) {
    it(name, () => {
      const [ours, theirs] = pair(fmt, opts);
      const q = run("qemu-img", ["resize", "-f", fmt, ...args.slice(0, -1), theirs, ...args.slice(-1)]);
      expect(q.status, q.stderr).toBe(0);
      const r = qimg(["resize", "-f", fmt, ...args.slice(0, -1), ours, ...args.slice(-1)]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(q.stdout);
      expect(virtualSize(ours, fmt)).toBe(virtualSize(theirs, fmt));
      const cmp = run("qemu-img", ["compare", "-f", fmt, "-F", fmt, ours, theirs]);
      expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      if (fmt === "qcow2") {
        const c = qemuCheck(ours);
        expect(c.status, JSON.stringify(c.json)).toBe(0);
        // QEMU's file size after a shrink is deterministic (the tail after the last used
        // cluster is cut); after growth it depends on where each writer puts the new L1 table.
        if (args.includes("--shrink")) expect(statSync(ours).size).toBe(statSync(theirs).size);
      } else {
        expect(statSync(ours).size).toBe(statSync(theirs).size);
      }
      if (args.includes("--preallocation=full") || args.includes("--preallocation=metadata")) {
        // Every cluster of the grown area is allocated, as in QEMU's image.
        const m = (f: string) =>
          JSON.parse(runOk("qemu-img", ["map", "--output=json", "-f", fmt, f]))
            .filter((e: { data: boolean }) => e.data)
            .reduce((s: number, e: { length: number }) => s + e.length, 0);
        expect(m(ours)).toBe(m(theirs));
      }
    });
  }

  it("refusals: exit code and messages equal qemu-img's", () => {
    const [ours, theirs] = pair("qcow2");
    const cases = [
      ["10M"],
      ["--", "-60M"],
      ["--preallocation=full", "--shrink", "5M"],
      ["--preallocation=bogus", "80M"],
      ["+1000"],
      ["--shrink", "0"],
      ["abc"],
      ["--preallocation=full", "64M"],
      ["100P"],
    ];
    for (const c of cases) {
      const q = run("qemu-img", ["resize", "-f", "qcow2", ...c.slice(0, -1), theirs, ...c.slice(-1)]);
      const r = qimg(["resize", "-f", "qcow2", ...c.slice(0, -1), ours, ...c.slice(-1)]);
      expect(r.status, c.join(" ")).toBe(q.status);
      expect(r.stderr.replaceAll("qimg:", "qemu-img:"), c.join(" ")).toBe(q.stderr);
    }
    const raw = t.path("r.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", raw, "1M"]);
    const r = qimg(["resize", "-f", "raw", "--preallocation=metadata", raw, "2M"]);
    const q = run("qemu-img", ["resize", "-f", "raw", "--preallocation=metadata", raw, "2M"]);
    expect([r.status, r.stderr.replace("qimg:", "qemu-img:")]).toEqual([q.status, q.stderr]);
    expect(qimg(["resize"]).stderr).toContain("Expecting image file name and size");
    expect(qemuCheck(ours).status).toBe(0);
  });

  it("without -f a probed raw image is resized after qemu-img's warning; amend refuses it", () => {
    const [ours, theirs] = pair("raw");
    const q = run("qemu-img", ["resize", theirs, "70M"]);
    const r = qimg(["resize", ours, "70M"]);
    expect([r.status, r.stdout, r.stderr.replace(ours, theirs)]).toEqual([q.status, q.stdout, q.stderr]);
    const qa = run("qemu-img", ["amend", "-o", "size=80M", theirs]);
    const ra = qimg(["amend", "-o", "size=80M", ours]);
    expect([ra.status, ra.stderr.replace(ours, theirs).replace(/^qimg:/m, "qemu-img:")]).toEqual([
      qa.status,
      qa.stderr,
    ]);
  });

  it("a negative size without -- is a size, not an option (qemu-img 10)", () => {
    const [ours, theirs] = pair("raw");
    expect(run("qemu-img", ["resize", "-f", "raw", "--shrink", theirs, "-1M"]).status).toBe(0);
    expect(qimg(["resize", "-f", "raw", "--shrink", ours, "-1M"]).status).toBe(0);
    expect(statSync(ours).size).toBe(statSync(theirs).size);
  });
});
