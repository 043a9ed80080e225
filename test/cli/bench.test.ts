/**
 * `qimg bench` against `qemu-img bench` on the same images: the report lines, the option errors
 * and exit codes match; a write run leaves exactly the bytes qemu-img's run leaves (same offsets,
 * steps, pattern), checked with `qemu-img compare` and `check`; read runs work on any format.
 */
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const t = tempDir();
afterAll(() => t.cleanup());

/** stderr without the program name, first line. */
const msg = (s: string) => s.replace(/^(qemu-img|qimg): /gm, "").split("\n")[0];
/** stdout with the timing replaced, so both tools' reports compare equal. */
const report = (s: string) => s.replace(/Run completed in [0-9.]+ seconds\./, "Run completed in T seconds.");

describe.skipIf(!have)("qimg bench vs qemu-img bench", () => {
  it("write runs leave the same image as qemu-img's (offset, step, buffer size, pattern, flushes)", () => {
    for (const [fmt, args] of [
      ["raw", ["-c", "300", "-d", "8", "-s", "8k", "-S", "12k", "-o", "4k", "--pattern=0x5a"]],
      [
        "qcow2",
        ["-c", "200", "-d", "4", "-s", "3k", "-S", "5k", "-o", "1k", "--pattern=7", "--flush-interval=20"],
      ],
      ["qcow2", ["-c", "64", "-d", "16", "-s", "64k", "--flush-interval=16", "--no-drain", "--pattern=255"]],
    ] as const) {
      const a = t.path(`a.${fmt}`);
      const b = t.path(`b.${fmt}`);
      runOk("qemu-img", ["create", "-q", "-f", fmt, a, "8M"]);
      runOk("qemu-img", ["create", "-q", "-f", fmt, b, "8M"]);
      const q = run("qemu-img", ["bench", "-w", ...args, "-f", fmt, a]);
      const m = qimg(["bench", "-w", ...args, "-f", fmt, b]);
      expect(q.status, q.stderr).toBe(0);
      expect(m.status, m.stderr).toBe(0);
      expect(report(m.stdout)).toBe(report(q.stdout));
      expect(run("qemu-img", ["compare", "-f", fmt, "-F", fmt, a, b]).status).toBe(0);
      // and not trivially: the run wrote something
      expect(run("qemu-img", ["compare", "-f", fmt, "-F", "raw", b, "null-co://"]).status).not.toBe(0);
      if (fmt === "qcow2") expect(run("qemu-img", ["check", b]).status).toBe(0);
    }
  });

  it("read runs on qcow2 and raw report like qemu-img", () => {
    const f = t.path("r.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", f, "4M"]);
    for (const args of [
      ["-c", "500"],
      ["-c", "100", "-d", "1", "-s", "64k", "-S", "0"],
      ["-c", "10", "-U", "-q"],
    ]) {
      const q = run("qemu-img", ["bench", ...args, "-f", "qcow2", f]);
      const m = qimg(["bench", ...args, "-f", "qcow2", f]);
      expect(m.status, m.stderr).toBe(q.status);
      expect(report(m.stdout)).toBe(report(q.stdout));
    }
  });

  it("option errors: same messages and exit codes", () => {
    const f = t.path("e.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", f, "1M"]);
    for (const args of [
      ["-c", "0"],
      ["-c", "x"],
      ["-c", "1k"],
      ["-d", "0"],
      ["-d", "x"],
      ["-s", "0"],
      ["-s", "3G"],
      ["-S", "3G"],
      ["-o", "x"],
      ["-w", "--pattern=300"],
      ["-w", "--pattern=x"],
      ["--flush-interval=4"],
      ["-w", "--flush-interval=3"],
      ["-w", "--flush-interval=3000000000"],
      ["-t", "foo"],
      ["-i", "foo"],
      ["-n"],
      ["-w", "-U"],
      [],
    ]) {
      const tail = args.length === 0 ? [f, "extra"] : [f];
      const q = run("qemu-img", ["bench", "-f", "raw", ...args, ...tail]);
      const m = qimg(["bench", "-f", "raw", ...args, ...tail]);
      expect(q.status, args.join(" ")).not.toBe(0);
      expect(m.status, args.join(" ")).toBe(q.status);
      expect(msg(m.stderr), args.join(" ")).toBe(msg(q.stderr));
    }
  });

  it("a request past the end fails like qemu-img's (exit 1, Failed request)", () => {
    const f = t.path("end.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", f, "1M"]);
    for (const args of [
      ["-c", "2", "-s", "2M"],
      ["-c", "2", "-o", "2M"],
    ]) {
      const q = run("qemu-img", ["bench", "-f", "raw", ...args, f]);
      const m = qimg(["bench", "-f", "raw", ...args, f]);
      expect(q.status).toBe(1);
      expect(m.status).toBe(1);
      expect(msg(m.stderr)).toBe(msg(q.stderr));
    }
  });

  it("wraps within the image where qemu-img 10 overruns its end (QEMU's later fix)", () => {
    const f = t.path("wrap.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", f, "4M"]);
    const args = [
      "-w",
      "-c",
      "1000",
      "-d",
      "8",
      "-s",
      "8k",
      "-S",
      "12k",
      "-o",
      "4k",
      "--pattern=1",
      "-f",
      "raw",
      f,
    ];
    const m = qimg(["bench", ...args]);
    expect(m.status, m.stderr).toBe(0);
  });
});
