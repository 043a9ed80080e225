/**
 * Persistent dirty bitmaps: `qimg bitmap`, `info`, `check` and `convert --bitmaps` against
 * qemu-img on the same files (JSON field by field, messages and exit codes), and the library's
 * write tracking compared with qemu-io's.
 */
import { spawn } from "node:child_process";
import { copyFileSync, existsSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { parseCommandLine } from "../../ts/options/commands/index.js";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const haveNbd = have && hasPeer("qemu-nbd");

/** Dirty guest ranges [start, end) of a bitmap's bits (least significant bit first). */
function dirtyRanges(d: { granularity: number; size: number; bits: Buffer }): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i * d.granularity < d.size; i++) {
    if (!(d.bits[i >> 3] & (1 << (i & 7)))) continue;
    const s = i * d.granularity;
    const e = Math.min(s + d.granularity, d.size);
    const last = out[out.length - 1];
    if (last && last[1] === s) last[1] = e;
    else out.push([s, e]);
  }
  return out;
}

/** The dirty ranges QEMU itself reports: qemu-nbd -B exports the bitmap, qemu-img map reads it. */
async function qemuDirty(image: string, bitmap: string): Promise<Array<[number, number]>> {
  const sock = t.path(`nbd-${bitmap}.sock`);
  const nbd = spawn("qemu-nbd", [
    "-k",
    sock,
    "-f",
    "qcow2",
    "-x",
    "e",
    "-B",
    bitmap,
    "-r",
    "--persistent",
    image,
  ]);
  try {
    for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    const opts = `driver=nbd,export=e,server.type=unix,server.path=${sock},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`;
    const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", "--image-opts", opts])) as Array<{
      start: number;
      length: number;
      data: boolean;
    }>;
    return map.filter((e) => !e.data).map((e) => [e.start, e.start + e.length]);
  } finally {
    nbd.kill();
    await new Promise((r) => nbd.once("exit", r));
  }
}
const t = tempDir();
afterAll(() => t.cleanup());

/** An image with enabled `b1` (written to by qemu-io) and disabled `b2` (128 KiB). */
function qemuMade(name: string): string {
  const f = t.path(name);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", f, "16M"]);
  runOk("qemu-img", ["bitmap", "--add", f, "b1"]);
  runOk("qemu-img", ["bitmap", "--add", "-g", "128k", "--disable", f, "b2"]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write 0 100k", "-c", "write 5M 4k", f]);
  return f;
}

const specific = (f: string, tool: "qemu" | "qimg") => {
  const out =
    tool === "qemu"
      ? runOk("qemu-img", ["info", "--output=json", f])
      : qimg(["info", "--output=json", f]).stdout;
  return JSON.parse(out)["format-specific"];
};

describe("bitmap command line", () => {
  it("keeps actions in order with their options", () => {
    const c = parseCommandLine([
      "bitmap",
      "--add",
      "-g",
      "128k",
      "--merge",
      "x",
      "-b",
      "s.qcow2",
      "--disable",
      "i.qcow2",
      "bm",
    ]);
    expect(c).toMatchObject({
      cmd: "bitmap",
      filename: "i.qcow2",
      bitmap: "bm",
      granularity: 131072,
      sourceFile: "s.qcow2",
      actions: [{ op: "add" }, { op: "merge", source: "x" }, { op: "disable" }],
    });
  });
});

describe.skipIf(!have)("qimg bitmap vs qemu-img", () => {
  it("info (JSON and human) and check agree on a qemu-made image", () => {
    const f = qemuMade("info.qcow2");
    expect(JSON.parse(qimg(["info", "--output=json", f]).stdout)).toEqual(
      JSON.parse(runOk("qemu-img", ["info", "--output=json", f])),
    );
    expect(qimg(["info", f]).stdout).toBe(runOk("qemu-img", ["info", f]));
    const r = qimg(["check", "--output=json", f]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(runOk("qemu-img", ["check", "--output=json", f])));
  });

  it("the same actions give the same bitmaps, and qemu-img check stays clean", () => {
    const ours = qemuMade("ours.qcow2");
    const theirs = t.path("theirs.qcow2");
    copyFileSync(ours, theirs);
    const other = qemuMade("other.qcow2");
    const steps = [
      ["--add", "-g", "256k", "n1"],
      ["--merge", "b1", "--disable", "n1"],
      ["--merge", "b1", "-b", other, "-F", "qcow2", "b2"],
      ["--enable", "b2"],
      ["--clear", "b1"],
      ["--add", "--remove", "tmp"],
    ];
    for (const s of steps) {
      const args = ["bitmap", ...s.slice(0, -1)];
      const q = run("qemu-img", [...args, theirs, s[s.length - 1]]);
      const r = qimg([...args, ours, s[s.length - 1]]);
      expect([r.status, r.stderr]).toEqual([q.status, q.stderr.replaceAll("qemu-img:", "qimg:")]);
    }
    expect(specific(ours, "qemu")).toEqual(specific(theirs, "qemu"));
    expect(run("qemu-img", ["check", ours]).status).toBe(0);
  });

  it("errors and exit codes match qemu-img's", async () => {
    const f = qemuMade("errors.qcow2");
    const cases = [
      ["--add", f, "b1"],
      ["--remove", f, "nope"],
      ["--clear", "--add", f, "y"],
      [f, "b1"],
      ["-g", "64k", "--clear", f, "b1"],
      ["-b", "x", "--clear", f, "b1"],
      ["-F", "qcow2", "--merge", "b1", f, "b2"],
      ["--clear", f],
      ["--add", "-g", "1000", f, "x"],
      ["--add", "-g", "3x", f, "x"],
      ["--merge", "nope", f, "b2"],
    ];
    for (const c of cases) {
      const q = run("qemu-img", ["bitmap", ...c]);
      const r = qimg(["bitmap", ...c]);
      expect([c, r.status, r.stderr]).toEqual([c, q.status, q.stderr.replaceAll("qemu-img:", "qimg:")]);
    }
    const v2 = t.path("v2.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "1M"]);
    expect(qimg(["bitmap", "--add", v2, "b"]).status).toBe(1);
  });

  it("convert --bitmaps round-trips through qemu-img", async () => {
    const src = qemuMade("conv-src.qcow2");
    const mid = t.path("conv-mid.qcow2");
    const back = t.path("conv-back.qcow2");
    expect(qimg(["convert", "--bitmaps", "-O", "qcow2", src, mid]).status).toBe(0);
    expect(run("qemu-img", ["compare", src, mid]).status).toBe(0);
    expect(run("qemu-img", ["check", mid]).status).toBe(0);
    expect(specific(mid, "qemu")).toEqual(specific(src, "qemu"));
    runOk("qemu-img", ["convert", "--bitmaps", "-O", "qcow2", mid, back]);
    await using a = await open(src, { readOnly: true });
    await using b = await open(back, { readOnly: true });
    for (const n of ["b1", "b2"]) expect(await b.bitmapRead(n)).toEqual(await a.bitmapRead(n));
    const e = qimg(["convert", "--bitmaps", "-O", "raw", src, t.path("x.raw")]);
    expect([e.status, e.stderr]).toEqual([1, "qimg: Format driver 'raw' does not support bitmaps\n"]);
    const two = qimg(["convert", "--bitmaps", "-O", "qcow2", src, src, t.path("two.qcow2")]);
    expect(two.stderr).toBe("qimg: Copying bitmaps only possible with single source\n");
  });

  it("writes through the library set the bits qemu-io's writes set", async () => {
    const ours = qemuMade("track-ours.qcow2");
    const theirs = t.path("track-theirs.qcow2");
    copyFileSync(ours, theirs);
    {
      await using img = await open(ours);
      await img.write(3 << 20, Buffer.alloc(70000, 1));
      await img.writeZeroes(8 << 20, 1 << 20, { mayUnmap: true });
      await img.discard(12 << 20, 2 << 20);
    }
    runOk("qemu-io", [
      "-f",
      "qcow2",
      "-c",
      "write -P 1 3M 70000",
      "-c",
      "write -z -u 8M 1M",
      "-c",
      "discard 12M 2M",
      theirs,
    ]);
    expect(run("qemu-img", ["check", ours]).status).toBe(0);
    await using a = await open(ours, { readOnly: true });
    await using b = await open(theirs, { readOnly: true });
    expect(await a.bitmaps()).toEqual(await b.bitmaps());
    for (const n of ["b1", "b2"]) expect(await a.bitmapRead(n)).toEqual(await b.bitmapRead(n));
  });

  it.skipIf(!haveNbd)("QEMU sees the dirty regions qimg recorded (qemu-nbd -B)", async () => {
    const f = qemuMade("nbd.qcow2");
    {
      await using img = await open(f);
      await img.write(7 << 20, Buffer.alloc(1000, 3));
      await img.writeZeroes(10 << 20, 300 << 10);
    }
    await using r = await open(f, { readOnly: true, forceShare: true });
    const ours = dirtyRanges(await r.bitmapRead("b1"));
    expect(ours).toEqual([
      [0, 128 << 10],
      [5 << 20, (5 << 20) + (64 << 10)],
      [7 << 20, (7 << 20) + (64 << 10)],
      [10 << 20, (10 << 20) + (320 << 10)],
    ]);
    expect(await qemuDirty(f, "b1")).toEqual(ours);
  });
});
