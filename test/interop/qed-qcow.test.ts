/**
 * qed and qcow (v1) through the CLI, side by side with qemu-img: `create -o help`, `info`
 * (human and JSON) byte-equal, `check`/`check -r` output and exit codes for qed (63 for qcow),
 * and `convert` between every pair of raw, qcow2, qed and qcow, equal contents and a sparse target.
 */
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, hasReader, qimg, readerSha256, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const t = tempDir();
afterAll(() => t.cleanup());

const SIZE = 8 << 20;

/** Run `args` through both tools; JSON output is compared parsed (QEMU orders keys by hash). */
function same(args: string[], f: string, status?: number): void {
  const q = run("qemu-img", [...args, f]);
  const m = qimg([...args, f]);
  if (status !== undefined) expect(q.status).toBe(status);
  expect(m.status, m.stderr).toBe(q.status);
  if (args.includes("--output=json")) expect(JSON.parse(m.stdout)).toEqual(JSON.parse(q.stdout));
  else expect(m.stdout).toBe(q.stdout);
}

/** A raw source with data runs, zero runs and holes. */
function source(): string {
  const p = t.path("src.raw");
  const b = Buffer.alloc(SIZE);
  for (let i = 0; i < 64 << 10; i++) b[i] = (i * 7) % 251;
  b.fill(0x33, 1 << 20, (1 << 20) + 300_000);
  b.fill(0x44, SIZE - 4096, SIZE);
  writeFileSync(p, b);
  return p;
}

describe.skipIf(!have)("qed and qcow with qemu-img", () => {
  it("create -o help lists qemu-img's options", () => {
    for (const fmt of ["qed", "qcow"]) {
      const q = runOk("qemu-img", ["create", "-f", fmt, "-o", "help"]);
      const m = qimg(["create", "-f", fmt, "-o", "help"]);
      expect(m.status).toBe(0);
      expect(m.stdout).toBe(q);
    }
  });

  it("create: every option gives qemu-img's bytes, and the same errors", () => {
    writeFileSync(t.path("obase.raw"), Buffer.alloc(1 << 20));
    const ok: Array<[string, string[]]> = [
      ["qed", ["-o", "preallocation=off"]],
      ["qed", ["-o", "preallocation=falloc"]],
      ["qed", ["-o", "preallocation=full"]],
      ["qed", ["-o", "cluster_size=16k,table_size=8"]],
      ["qed", ["-o", "cluster_size=2M,table_size=2"]],
      ["qed", ["-b", "obase.raw", "-F", "raw", "-o", "cluster_size=8k"]],
      ["qcow", []],
      ["qcow", ["-o", "preallocation=full"]],
      ["qcow", ["-b", "obase.raw", "-F", "raw"]],
    ];
    for (const [i, [fmt, opts]] of ok.entries()) {
      const a = t.path(`oq${i}.${fmt}`);
      const b = t.path(`om${i}.${fmt}`);
      runOk("qemu-img", ["create", "-q", "-f", fmt, ...opts, a, "3M"]);
      const m = qimg(["create", "-q", "-f", fmt, ...opts, b, "3M"]);
      expect(m.status, m.stderr).toBe(0);
      expect(readFileSync(b), `${fmt} ${opts.join(" ")}`).toEqual(readFileSync(a));
    }
    const bad: Array<[string, string]> = [
      ["qed", "cluster_size=2048"],
      ["qed", "cluster_size=12k"],
      ["qed", "table_size=3"],
      ["qed", "table_size=32"],
      ["qed", "preallocation=metadata"],
    ];
    for (const [fmt, o] of bad) {
      const f = t.path(`bad.${fmt}`);
      const q = run("qemu-img", ["create", "-q", "-f", fmt, "-o", o, f, "3M"]);
      const m = qimg(["create", "-q", "-f", fmt, "-o", o, f, "3M"]);
      expect(q.status).toBe(1);
      expect(m.status).toBe(1);
      const why = q.stderr.trim().split(": ").slice(2).join(": ");
      expect(m.stderr, o).toContain(why);
    }
  });

  it("info human and JSON equal qemu-img's", () => {
    const base = t.path("base.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", base, "4M"]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", t.path("base.qcow2"), "4M"]);
    const cases: Array<[string, string[]]> = [
      ["qed", ["-o", "cluster_size=4096,table_size=2"]],
      ["qed", ["-b", "base.raw", "-F", "raw"]],
      ["qed", ["-b", "base.qcow2", "-F", "qcow2"]],
      ["qcow", []],
      ["qcow", ["-b", "base.raw", "-F", "raw"]],
    ];
    for (const [i, [fmt, opts]] of cases.entries()) {
      const f = t.path(`info${i}.${fmt}`);
      const mc = qimg(["create", "-q", "-f", fmt, ...opts, f, "4M"]);
      expect(mc.status, mc.stderr).toBe(0);
      runOk("qemu-io", ["-f", fmt, "-c", "write -P 1 0 64k", f]);
      same(["info", "--output=json"], f, 0);
      same(["info"], f, 0);
    }
  });

  it("qed check and check -r: output and exit codes as qemu-img", () => {
    const f = t.path("chk.qed");
    runOk("qemu-img", ["create", "-q", "-f", "qed", f, "10M"]);
    runOk("qemu-io", ["-c", "write -P 1 0 100k", "-c", "write -P 2 5M 64k", f]);
    for (const args of [["check"], ["check", "--output=json"]]) same(args, f, 0);
    // Leak three clusters by growing the file.
    writeFileSync(f, Buffer.concat([readFileSync(f), Buffer.alloc(3 * 65536)]));
    for (const args of [["check"], ["check", "--output=json"], ["check", "-r", "all"]]) same(args, f, 3);
    // An L2 entry past the end of the file: a corruption, fixed by -r all.
    const buf = readFileSync(f);
    const l2 = Number(buf.readBigUInt64LE(65536));
    buf.writeBigUInt64LE(BigInt(buf.length + (1 << 20)), l2 + 8);
    writeFileSync(f, buf);
    const copy = t.path("chk2.qed");
    writeFileSync(copy, buf);
    for (const args of [["check"], ["check", "--output=json"]]) same(args, f, 2);
    // QEMU's qed fixes corruptions with -r leaks as well as with -r all.
    for (const mode of ["leaks", "all"]) {
      writeFileSync(f, buf);
      writeFileSync(copy, buf);
      const q = run("qemu-img", ["check", "-r", mode, f]);
      const m = qimg(["check", "-r", mode, copy]);
      expect([m.status, m.stdout.replaceAll("chk2", "chk")]).toEqual([q.status, q.stdout]);
      expect(readFileSync(copy)).toEqual(readFileSync(f));
    }
  });

  it("qed left by a crash (need-check set): check, check -r all and a writable open as QEMU", () => {
    const f = t.path("crash.qed");
    runOk("qemu-img", ["create", "-q", "-f", "qed", f, "10M"]);
    runOk("qemu-io", ["-c", "write -P 1 0 192k", f]);
    const buf = readFileSync(f);
    buf.writeBigUInt64LE(buf.readBigUInt64LE(16) | 2n, 16);
    const l2 = Number(buf.readBigUInt64LE(65536));
    buf.writeBigUInt64LE(BigInt(buf.length + (1 << 20)), l2 + 16);
    const copies = ["crash-q.qed", "crash-m.qed"].map((n) => t.path(n));
    for (const c of [f, ...copies]) writeFileSync(c, buf);
    same(["check", "--output=json"], f, 2);
    const q = run("qemu-img", ["check", "-r", "all", copies[0]]);
    const m = qimg(["check", "-r", "all", copies[1]]);
    expect([m.status, m.stdout.replaceAll("crash-m", "crash-q")]).toEqual([q.status, q.stdout]);
    expect(readFileSync(copies[1])).toEqual(readFileSync(copies[0]));
    // A writable open (here: a write through convert -n) repairs first, as QEMU's open does.
    writeFileSync(copies[1], buf);
    const src = t.path("crash-src.raw");
    writeFileSync(src, Buffer.alloc(10 << 20, 6));
    const w = qimg(["convert", "-n", "-f", "raw", "-O", "qed", src, copies[1]]);
    expect(w.status, w.stderr).toBe(0);
    expect(run("qemu-img", ["check", copies[1]]).status).toBe(3); // the lost cluster leaks
    expect(run("qemu-img", ["compare", "-f", "qed", "-F", "raw", copies[1], src]).status).toBe(0);
  });

  it("qcow has no check (exit 63, qemu-img's message)", () => {
    const f = t.path("nochk.qcow");
    runOk("qemu-img", ["create", "-q", "-f", "qcow", f, "1M"]);
    const q = run("qemu-img", ["check", f]);
    const m = qimg(["check", f]);
    expect([m.status, m.stderr.includes("does not support checks")]).toEqual([63, true]);
    expect(q.status).toBe(63);
  });

  it("convert between every pair of raw, qcow2, qed and qcow, sparse", () => {
    const src = source();
    const fmts = ["raw", "qcow2", "qed", "qcow"];
    const made: Record<string, string> = {};
    for (const f of fmts) {
      made[f] = t.path(`m.${f}`);
      runOk("qemu-img", ["convert", "-f", "raw", "-O", f, src, made[f]]);
    }
    for (const from of fmts) {
      for (const to of fmts) {
        const out = t.path(`c-${from}-${to}`);
        const ref = t.path(`r-${from}-${to}`);
        const m = qimg(["convert", "-f", from, "-O", to, made[from], out]);
        expect(m.status, `${from}->${to}: ${m.stderr}`).toBe(0);
        const cmp = run("qemu-img", ["compare", "-f", to, "-F", "raw", out, src]);
        expect(cmp.status, `${from}->${to}: ${cmp.stdout}`).toBe(0);
        const qi = JSON.parse(runOk("qemu-img", ["info", "--output=json", "-f", to, out]));
        expect(qi["virtual-size"]).toBe(SIZE);
        if (to === "qed" || to === "qcow2") {
          expect(run("qemu-img", ["check", "-f", to, out]).status).toBe(0);
        }
        // As sparse as qemu-img's own conversion.
        runOk("qemu-img", ["convert", "-f", from, "-O", to, made[from], ref]);
        const mine = statSync(out).blocks * 512;
        const theirs = statSync(ref).blocks * 512;
        expect(mine, `${from}->${to}`).toBeLessThanOrEqual(theirs + (256 << 10));
      }
    }
  });

  it("qcow images qimg writes read the same in independent readers (7-Zip, libqcow)", () => {
    const src = source();
    const f = t.path("ind.qcow");
    const m = qimg(["convert", "-f", "raw", "-O", "qcow", src, f]);
    expect(m.status, m.stderr).toBe(0);
    const c = t.path("ind-c.qcow");
    const mc = qimg(["convert", "-c", "-f", "raw", "-O", "qcow", src, c]);
    expect(mc.status, mc.stderr).toBe(0);
    expect(run("qemu-img", ["compare", "-f", "qcow", "-F", "raw", c, src]).status).toBe(0);
    expect(statSync(c).size).toBeLessThan(statSync(f).size);
    for (const tool of ["7zz", "pyqcow"] as const) {
      if (!hasReader(tool)) continue;
      expect(readerSha256(tool, f), tool).toBe(sha256(src));
      // 7-Zip has no method for compressed qcow v1 clusters (it refuses QEMU's too).
      if (tool === "pyqcow") expect(readerSha256(tool, c), `${tool} compressed`).toBe(sha256(src));
    }
  });

  it("map (human and JSON) equals qemu-img's", () => {
    for (const fmt of ["qed", "qcow"]) {
      const f = t.path(`map.${fmt}`);
      runOk("qemu-img", ["create", "-q", "-f", fmt, f, "4M"]);
      runOk("qemu-io", [
        "-f",
        fmt,
        "-c",
        "write -P 1 0 100k",
        "-c",
        "write -z 1M 128k",
        "-c",
        "write -P 2 3M 4k",
        f,
      ]);
      same(["map", "--output=json"], f, 0);
      same(["map"], f, 0);
    }
  });

  it("qed rebase -u and commit behave as qemu-img's", () => {
    const base = t.path("cbase.raw");
    const other = t.path("cother.raw");
    writeFileSync(base, Buffer.alloc(4 << 20));
    writeFileSync(other, Buffer.alloc(4 << 20));
    const tops = [t.path("ctop1.qed"), t.path("ctop2.qed")];
    for (const top of tops) {
      runOk("qemu-img", ["create", "-q", "-f", "qed", "-b", "cbase.raw", "-F", "raw", top]);
      runOk("qemu-io", ["-f", "qed", "-c", "write -P 9 0 64k", top]);
    }
    expect(run("qemu-img", ["rebase", "-u", "-b", "cother.raw", "-F", "raw", tops[0]]).status).toBe(0);
    expect(qimg(["rebase", "-u", "-b", "cother.raw", "-F", "raw", tops[1]]).status).toBe(0);
    expect(readFileSync(tops[1])).toEqual(readFileSync(tops[0]));
    runOk("qemu-img", ["commit", tops[0]]);
    const m = qimg(["commit", tops[1]]);
    expect([m.status, m.stdout]).toEqual([0, "Image committed.\n"]);
    // QEMU's qed cannot empty the top image: both keep their data.
    expect(readFileSync(tops[1])).toEqual(readFileSync(tops[0]));
    expect(readFileSync(other).subarray(0, 65536)).toEqual(Buffer.alloc(65536, 9));
  });
});
