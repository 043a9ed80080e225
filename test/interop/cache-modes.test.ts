/**
 * Cache modes (`-t` / `-T`) against qemu-img 10: every mode converts raw sources of unaligned
 * sizes into raw, qcow2 (512-byte clusters) and luks targets that `qemu-img compare`/`check`
 * accept; `-t none` writes into an existing odd-sized raw file without growing it; commit and
 * rebase take `-t`/`-T`; unknown modes fail as qemu-img does (message, exit 1); and O_DIRECT on
 * a file system that refuses it fails like qemu-img rather than falling back (on kernels where
 * tmpfs takes O_DIRECT — 6.6 and later — both tools must succeed there instead).
 */
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, QIMG, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const haveStrace = hasPeer("strace");
const t = tempDir("qimg-cache-");
afterAll(() => t.cleanup());
const MODES = ["none", "off", "writeback", "writethrough", "directsync", "unsafe"];
const OBJ = ["--object", "secret,id=sec0,data=hunter2"];

function payload(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = ((i * 2654435761) >>> 13) ^ seed;
  // A zero run, so sparse handling is exercised too.
  b.fill(0, Math.min(n, 4096), Math.min(n, 70_000));
  return b;
}

function ok(r: { status: number; stderr: string }): void {
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
}

describe.skipIf(!have)("cache modes against qemu-img", () => {
  for (const extra of [512, 3]) {
    const size = (1 << 20) + extra;
    it(`every mode round-trips a ${size}-byte raw source to raw, qcow2 and luks`, () => {
      const src = t.path(`src-${extra}.raw`);
      writeFileSync(src, payload(size, extra));
      for (const m of MODES) {
        const raw = t.path(`o-${extra}-${m}.raw`);
        ok(qimg(["convert", "-t", m, "-T", m, "-f", "raw", "-O", "raw", src, raw]));
        expect(run("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, raw]).status).toBe(0);
        const q = t.path(`o-${extra}-${m}.qcow2`);
        ok(qimg(["convert", "-t", m, "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", src, q]));
        expect(run("qemu-img", ["check", "-q", q]).status).toBe(0);
        expect(run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", src, q]).status).toBe(0);
        const l = t.path(`o-${extra}-${m}.luks`);
        ok(
          qimg([
            "convert",
            ...OBJ,
            "-t",
            m,
            "-f",
            "raw",
            "-O",
            "luks",
            "-o",
            "key-secret=sec0,iter-time=10",
            src,
            l,
          ]),
        );
        const cmp = run("qemu-img", [
          "compare",
          ...OBJ,
          "--image-opts",
          `driver=raw,file.filename=${src}`,
          `driver=luks,key-secret=sec0,file.filename=${l}`,
        ]);
        expect(cmp.stdout + cmp.stderr).toContain("Images are identical");
        // And back: luks source read with -T m.
        const back = t.path(`b-${extra}-${m}.raw`);
        ok(
          qimg([
            "convert",
            ...OBJ,
            "-T",
            m,
            "--image-opts",
            `driver=luks,key-secret=sec0,file.filename=${l}`,
            "-O",
            "raw",
            back,
          ]),
        );
        expect(readFileSync(back).subarray(0, size).equals(readFileSync(src))).toBe(true);
      }
    });
  }

  it("-t none writes into an existing odd-sized raw file without growing it (-n)", () => {
    const size = (1 << 20) + 3;
    const src = t.path("n-src.raw");
    writeFileSync(src, payload(size, 9));
    for (const m of ["none", "directsync"]) {
      const dst = t.path(`n-dst-${m}.raw`);
      writeFileSync(dst, Buffer.alloc(0));
      truncateSync(dst, size);
      ok(qimg(["convert", "-n", "-t", m, "-f", "raw", "-O", "raw", src, dst]));
      expect(statSync(dst).size).toBe(size);
      expect(readFileSync(dst).equals(readFileSync(src))).toBe(true);
    }
  });

  it("commit -t none and rebase -t none -T none give what qemu-img computes", () => {
    const base = t.path("c-base.qcow2");
    const top = t.path("c-top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", base, "2M"]);
    runOk("qemu-io", ["-c", "write -P 0x11 0 1M", base]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
    runOk("qemu-io", ["-c", "write -P 0x22 4096 3000", "-c", "write -P 0x33 1536k 512", top]);
    const expected = t.path("c-expected.raw");
    runOk("qemu-img", ["convert", "-O", "raw", top, expected]);
    // rebase onto nothing: the image becomes standalone, copying what the chain gave it.
    const r = t.path("c-rebased.qcow2");
    runOk("cp", [top, r]);
    ok(qimg(["rebase", "-t", "none", "-T", "none", "-f", "qcow2", "-b", "", r]));
    expect(run("qemu-img", ["check", "-q", r]).status).toBe(0);
    expect(run("qemu-img", ["compare", "-F", "raw", r, expected]).status).toBe(0);
    // commit into the base with O_DIRECT.
    ok(qimg(["commit", "-t", "none", "-f", "qcow2", top]));
    expect(run("qemu-img", ["check", "-q", base]).status).toBe(0);
    expect(run("qemu-img", ["compare", "-F", "raw", base, expected]).status).toBe(0);
  });

  it("amend -t none works and an unknown mode fails with qemu-img's message", () => {
    const img = t.path("a.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "1M"]);
    ok(qimg(["amend", "-t", "none", "-f", "qcow2", "-o", "size=2M", img]));
    expect(JSON.parse(runOk("qemu-img", ["info", "--output=json", img]))["virtual-size"]).toBe(2 << 20);
    const cases: string[][] = [
      ["convert", "-t", "bogus", "-O", "raw", img, t.path("x")],
      ["convert", "-T", "bogus", "-O", "raw", img, t.path("x")],
      ["commit", "-t", "bogus", img],
      ["rebase", "-t", "bogus", "-u", "-b", "", img],
      ["rebase", "-T", "bogus", "-u", "-b", "", img],
      ["amend", "-t", "bogus", "-o", "size=2M", img],
    ];
    for (const c of cases) {
      const q = run("qemu-img", c);
      const m = qimg(c);
      expect(m.status).toBe(q.status);
      expect(m.status).toBe(1);
      expect(m.stderr.replace(/^qimg:/, "qemu-img:")).toBe(q.stderr);
    }
  });

  it.skipIf(!haveStrace)("opens with QEMU's flags; unsafe drops flushes but close still flushes", () => {
    const src = t.path("s-src.raw");
    writeFileSync(src, payload(1 << 20, 5));
    const dst = t.path("s-dst.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", dst, "1M"]);
    const traced = (m: string) => {
      const log = t.path(`strace-${m}.txt`);
      const r = run("strace", [
        "-f",
        "-e",
        "trace=openat,fdatasync,fsync",
        "-o",
        log,
        process.execPath,
        QIMG,
        "convert",
        "-n",
        "-t",
        m,
        "-T",
        m,
        "-O",
        "qcow2",
        src,
        dst,
      ]);
      ok(r);
      const lines = readFileSync(log, "utf8").split("\n");
      const opens = lines.filter((l) => l.includes("openat(") && l.includes(dst) && l.includes("O_RDWR"));
      const srcOpens = lines.filter((l) => l.includes("openat(") && l.includes(`"${src}"`));
      const syncs = lines.filter((l) => /\b(fdatasync|fsync)\(/.test(l)).length;
      expect(opens.length).toBe(1);
      return { flags: opens[0], srcFlags: srcOpens[srcOpens.length - 1], syncs };
    };
    const wb = traced("writeback");
    expect(wb.flags).not.toMatch(/O_DIRECT|O_DSYNC/);
    expect(wb.syncs).toBeGreaterThanOrEqual(2);
    const none = traced("none");
    expect(none.flags).toMatch(/O_DIRECT/);
    expect(none.flags).not.toMatch(/O_DSYNC/);
    expect(none.srcFlags).toMatch(/O_DIRECT/);
    const wt = traced("writethrough");
    expect(wt.flags).toMatch(/O_DSYNC/);
    expect(wt.flags).not.toMatch(/O_DIRECT/);
    const ds = traced("directsync");
    expect(ds.flags).toMatch(/O_DSYNC/);
    expect(ds.flags).toMatch(/O_DIRECT/);
    // unsafe: the drivers' flushes are dropped; the one at close remains (qimg's exit rule).
    const un = traced("unsafe");
    expect(un.flags).not.toMatch(/O_DIRECT|O_DSYNC/);
    expect(un.syncs).toBe(1);
    expect(run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", src, dst]).status).toBe(0);
  });

  it("bench -t none -w with unaligned requests leaves what qemu-img bench leaves", () => {
    const a = t.path("bench-q.raw");
    const b = t.path("bench-m.raw");
    writeFileSync(a, payload((1 << 20) + 3, 3));
    writeFileSync(b, payload((1 << 20) + 3, 3));
    const args = ["bench", "-f", "raw", "-t", "none", "-w", "-c", "300", "-d", "8", "-s", "1000", "-o", "7"];
    const q = run("qemu-img", [...args, "--pattern", "0x5a", a]);
    expect(q.status).toBe(0);
    ok(qimg([...args, "--pattern", "0x5a", b]));
    expect(statSync(b).size).toBe(statSync(a).size);
    expect(readFileSync(b).equals(readFileSync(a))).toBe(true);
  });

  it("O_DIRECT where the file system refuses it fails as qemu-img does (no silent fallback)", () => {
    let shm: string;
    try {
      shm = mkdtempSync(join("/dev/shm", "qimg-cache-"));
    } catch {
      console.warn("SKIP: /dev/shm is not available");
      return;
    }
    try {
      const src = join(shm, "src.raw");
      writeFileSync(src, payload(1 << 20, 1));
      const q = run("qemu-img", ["convert", "-t", "none", "-O", "raw", src, join(shm, "q.raw")]);
      const m = qimg(["convert", "-t", "none", "-O", "raw", src, join(shm, "m.raw")]);
      if (q.status === 0) {
        console.warn("NOTE: tmpfs takes O_DIRECT on this kernel: both tools must succeed there");
      }
      expect(m.status).toBe(q.status);
      expect(m.stderr.replace(/^qimg:/, "qemu-img:").replace(/m\.raw/g, "q.raw")).toBe(q.stderr);
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });
});
