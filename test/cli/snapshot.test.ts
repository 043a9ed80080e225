/**
 * `qimg snapshot`, `info`'s snapshot list and `convert -l` against qemu-img on the same files:
 * `snapshot -l` and `info` (human and JSON, field by field) agree; errors and exit codes match;
 * snapshots qimg makes, applies and deletes are what qemu-img lists and checks clean.
 */
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

/** A qemu-made image with two snapshots (one name repeated) and data changed between them. */
function withSnapshots(name: string): string {
  const f = t.path(name);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", f, "8M"]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x61 0 1M", f]);
  runOk("qemu-img", ["snapshot", "-c", "first", f]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x62 512k 1M", f]);
  runOk("qemu-img", ["snapshot", "-c", "second", f]);
  runOk("qemu-img", ["snapshot", "-c", "first", f]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x63 4M 64k", f]);
  return f;
}

/** stderr without the program name, to compare qemu-img's and qimg's messages. */
const msg = (s: string) => s.replace(/^(qemu-img|qimg): /gm, "").split("\n")[0];

describe.skipIf(!have)("qimg snapshot vs qemu-img", () => {
  it("snapshot -l, info and info --output=json agree with qemu-img", () => {
    const f = withSnapshots("list.qcow2");
    for (const args of [
      ["snapshot", "-l", f],
      ["snapshot", f],
      ["info", f],
      ["snapshot", "-U", "-l", f],
    ]) {
      const r = qimg(args);
      expect(r.status, args.join(" ")).toBe(0);
      expect(r.stdout).toBe(runOk("qemu-img", args));
    }
    const q = JSON.parse(runOk("qemu-img", ["info", "--output=json", f]));
    const r = JSON.parse(qimg(["info", "--output=json", f]).stdout);
    expect(r.snapshots).toHaveLength(3);
    for (let i = 0; i < 3; i++) expect(r.snapshots[i]).toStrictEqual(q.snapshots[i]);
    expect(Object.keys(r.snapshots[0])).toEqual(Object.keys(q.snapshots[0]));
    expect(r).toEqual(q);
  });

  it("errors and exit codes match qemu-img's", () => {
    const f = withSnapshots("errors.qcow2");
    const raw = t.path("plain.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", raw, "1M"]);
    const cases = [
      ["snapshot", "-d", "nope", f],
      ["snapshot", "-d", "1", f], // -d finds names only
      ["snapshot", "-a", "nope", f],
      ["snapshot", "-l", "-c", "x", f],
      ["snapshot", "-l", "-l", f],
      ["snapshot", "-c", "x", "-U", f],
      ["snapshot", "-l", f, f],
      ["snapshot", "-f", "raw", "-c", "x", raw],
      ["convert", "-l", "nope", "-O", "raw", f, t.path("x.raw")],
      ["convert", "-l", "snapshot.id=1,snapshot.name=second", "-O", "raw", f, t.path("x.raw")],
    ];
    for (const args of cases) {
      const q = run("qemu-img", args);
      const r = qimg(args);
      expect(r.status, args.join(" ")).toBe(q.status);
      expect(msg(r.stderr), args.join(" ")).toBe(msg(q.stderr));
    }
    const l = qimg(["snapshot", "-f", "raw", "-l", raw]);
    expect([l.status, l.stdout]).toEqual([0, ""]);
  });

  it("convert -l reads the same snapshot bytes as qemu-img", () => {
    const f = withSnapshots("convert.qcow2");
    for (const sel of [
      "first",
      "2",
      "second",
      "snapshot.id=3",
      "snapshot.name=second",
      "snapshot.id=1,snapshot.name=first",
    ]) {
      const a = t.path("a.raw");
      const b = t.path("b.raw");
      runOk("qemu-img", ["convert", "-l", sel, "-O", "raw", f, a]);
      const r = qimg(["convert", "-l", sel, "-O", "raw", f, b]);
      expect(r.status, `${sel}: ${r.stderr}`).toBe(0);
      expect(readFileSync(b).equals(readFileSync(a)), sel).toBe(true);
    }
  });

  it("qimg's create, apply and delete are what qemu-img lists, checks and converts", () => {
    const f = t.path("made.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", f, "4M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 300k", f]);
    expect(qimg(["snapshot", "-c", "a", f]).status).toBe(0);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 100k 300k", f]);
    expect(qimg(["snapshot", "-q", "-c", "b", f]).status).toBe(0);
    expect(qimg(["snapshot", "-l", f]).stdout).toBe(runOk("qemu-img", ["snapshot", "-l", f]));
    expect(runOk("qemu-img", ["snapshot", "-l", f])).toMatch(/\n1 {7}a {16}.*\n2 {7}b /);
    expect(run("qemu-img", ["check", f]).status).toBe(0);
    const snapA = t.path("snap-a.raw");
    runOk("qemu-img", ["convert", "-l", "a", "-O", "raw", f, snapA]);
    expect(qimg(["snapshot", "-a", "a", f]).status).toBe(0);
    expect(run("qemu-img", ["check", f]).status).toBe(0);
    expect(run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", f, snapA]).status).toBe(0);
    expect(qimg(["snapshot", "-d", "a", f]).status).toBe(0);
    expect(qimg(["snapshot", "-d", "b", f]).status).toBe(0);
    expect(run("qemu-img", ["check", f]).status).toBe(0);
    expect(runOk("qemu-img", ["snapshot", "-l", f])).toBe("");
    expect(run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", f, snapA]).status).toBe(0);
  });
});
