/**
 * Multi-conn from the CLI: `qimg convert` of an export whose server advertises
 * NBD_FLAG_CAN_MULTI_CONN uses several connections (seen on the wire through nbdkit's `log`
 * filter, and against qemu-nbd `--shared`) and gives the same bytes as qemu-img; `multi-conn=1`
 * (URI query or `file.multi-conn`) keeps one; a bad value is refused; an EIO injected for one
 * range (nbdkit `eval`, so on one of the connections) fails the convert with exit 1. `convert -n`
 * into an export with fast zero zeroes it up front (one `WRITE_ZEROES` + `FAST_ZERO` over the
 * whole export, as qemu-img) and then writes only data; without fast zero, or when the server
 * answers ENOTSUP (nbdkit `nozero` filter), it falls back to zeroing each zero range.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { parseNbdOptions, parseNbdString } from "../../ts/graph/nbd.js";
import { hasPeer, qimg, runOk, startOnSocket, tempDir } from "../helpers/peers.js";

const haveNbdkit = hasPeer("nbdkit");
const haveQemu = hasPeer("qemu-img") && hasPeer("qemu-nbd");
const t = tempDir();
const servers: ChildProcess[] = [];
afterAll(() => {
  for (const s of servers) s.kill();
  t.cleanup();
});

const start = (cmd: string, args: string[], sock: string) => startOnSocket(cmd, args, sock, servers);

/** Connection ids of an nbdkit log that carried at least one request of `op`. */
function connectionsWith(log: string, op: string): Set<number> {
  const ids = new Set<number>();
  for (const line of readFileSync(log, "utf8").split("\n")) {
    const m = /connection=(\d+) (\w+) id=/.exec(line);
    if (m && m[2] === op) ids.add(Number(m[1]));
  }
  return ids;
}

function source(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) b.fill((i / 4096) % 251, i, i + 2048);
  return b;
}

describe("multi-conn option", () => {
  it("is taken from the URI query and file.multi-conn, 1..16", () => {
    expect(parseNbdString("nbd+unix:///e?socket=/s&multi-conn=2").multiConn).toBe(2);
    expect(parseNbdString("nbd://h/e?multi-conn=1").multiConn).toBe(1);
    expect(parseNbdString("nbd://h/e").multiConn).toBeUndefined();
    expect(parseNbdOptions({ server: { type: "unix", path: "/s" }, "multi-conn": "8" }).multiConn).toBe(8);
    for (const bad of ["0", "17", "x", "1.5"]) {
      expect(() => parseNbdString(`nbd://h/e?multi-conn=${bad}`)).toThrow(/multi-conn/);
    }
  });
});

describe.skipIf(!haveNbdkit)("multi-conn on the wire (nbdkit)", () => {
  it("convert reads over several connections, or one with multi-conn=1, same bytes", async () => {
    const data = source(12 << 20);
    const src = t.path("mc-src.raw");
    writeFileSync(src, data);
    for (const [name, query, want] of [
      ["four", "", 4],
      ["one", "&multi-conn=1", 1],
    ] as const) {
      const sock = t.path(`${name}.sock`);
      const log = t.path(`${name}.log`);
      await start("nbdkit", ["-f", "-U", sock, "--filter=log", "memory", "12M", `logfile=${log}`], sock);
      const uri = `nbd+unix:///?socket=${sock}${query}`;
      // Fill the export (writes), then read it back (reads).
      const w = qimg(["convert", "-n", "-f", "raw", "-O", "raw", src, uri]);
      expect(w.status, w.stderr).toBe(0);
      const out = t.path(`${name}.raw`);
      const r = qimg(["convert", "-f", "raw", "-O", "raw", uri, out]);
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(out).equals(data)).toBe(true);
      const readers = connectionsWith(log, "Read");
      const writers = connectionsWith(log, "Write");
      if (want === 1) {
        expect(readers.size).toBe(1);
        expect(writers.size).toBe(1);
      } else {
        expect(readers.size).toBeGreaterThan(1);
        expect(writers.size).toBeGreaterThan(1);
        // The target's flush reaches every connection that wrote.
        for (const c of writers) expect(connectionsWith(log, "Flush").has(c)).toBe(true);
      }
    }
  });

  it("info and the format probe use one connection each (no wait for extra connections)", async () => {
    const sock = t.path("info.sock");
    const log = t.path("info.log");
    await start("nbdkit", ["-f", "-U", sock, "--filter=log", "memory", "1M", `logfile=${log}`], sock);
    const r = qimg(["info", `nbd+unix:///?socket=${sock}`]);
    expect(r.status, r.stderr).toBe(0);
    const connects = readFileSync(log, "utf8")
      .split("\n")
      .filter((l) => / Connect export=/.test(l));
    // The probe's connection, then info's own: both single.
    expect(connects.length).toBe(2);
  });

  it("an EIO on one of the connections fails convert (exit 1), never zeros", async () => {
    const sock = t.path("eio.sock");
    const log = t.path("eio.log");
    await start(
      "nbdkit",
      [
        "-f",
        "-U",
        sock,
        "--filter=log",
        "eval",
        "get_size=echo 8M",
        "can_multi_conn=exit 0",
        "pread=if [ $4 -lt 3145728 ] && [ $(($4 + $3)) -gt 2097152 ]; then echo 'EIO injected' >&2; exit 1; fi; dd if=/dev/zero count=$3 iflag=count_bytes status=none",
        `logfile=${log}`,
      ],
      sock,
    );
    const out = t.path("eio.raw");
    const r = qimg(["convert", "-f", "raw", "-O", "raw", `nbd+unix:///?socket=${sock}`, out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/NBD read failed \(errno 5\)/);
    expect(connectionsWith(log, "Read").size).toBeGreaterThan(1);
  });
});

describe.skipIf(!haveQemu)("multi-conn against qemu-nbd --shared", () => {
  it("convert of a qcow2 export equals qemu-img's", async () => {
    const raw = t.path("q-src.raw");
    writeFileSync(raw, source(20 << 20));
    const img = t.path("q.qcow2");
    runOk("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, img]);
    const sock = t.path("q.sock");
    await start("qemu-nbd", ["--persistent", "--shared=8", "-r", "-k", sock, "-f", "qcow2", img], sock);
    const uri = `nbd+unix:///?socket=${sock}`;
    const a = t.path("q-a.raw");
    const b = t.path("q-b.raw");
    const r = qimg(["convert", "-f", "raw", "-O", "raw", uri, a]);
    expect(r.status, r.stderr).toBe(0);
    runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, b]);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    runOk("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", a, img]);
  });
});

describe.skipIf(!haveNbdkit)("convert's up-front fast zero of an NBD target", () => {
  async function target(name: string, filters: string[]): Promise<{ uri: string; log: string }> {
    const sock = t.path(`${name}.sock`);
    const log = t.path(`${name}.log`);
    const fl = filters.filter((f) => f.startsWith("--"));
    const params = filters.filter((f) => !f.startsWith("--"));
    // The log filter outermost: it sees requests a later filter refuses.
    await start(
      "nbdkit",
      ["-f", "-U", sock, "--filter=log", ...fl, "memory", "8M", `logfile=${log}`, ...params],
      sock,
    );
    return { uri: `nbd+unix:///?socket=${sock}`, log };
  }

  /** The Zero and Write requests of a log: [op, offset, count, fast]. */
  function ops(log: string): Array<[string, number, number, boolean]> {
    const out: Array<[string, number, number, boolean]> = [];
    for (const line of readFileSync(log, "utf8").split("\n")) {
      const m =
        /connection=\d+ (Zero|Write) id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+) (.*)\.\.\.$/.exec(line);
      if (m) out.push([m[1], Number.parseInt(m[2], 16), Number.parseInt(m[3], 16), /fast=1/.test(m[4])]);
    }
    return out;
  }

  const src = () => {
    const b = Buffer.alloc(8 << 20);
    b.fill(9, 1 << 20, 2 << 20);
    b.fill(8, 5 << 20, (5 << 20) + 65536);
    const p = t.path("fz-src.raw");
    writeFileSync(p, b);
    return { p, b };
  };

  it("zeroes the whole export fast, then writes only data", async () => {
    const { p, b } = src();
    const { uri, log } = await target("fz", []);
    // Dirty the export first: the zeroing must really clear it.
    const dirty = t.path("fz-dirty.raw");
    writeFileSync(dirty, Buffer.alloc(8 << 20, 0x55));
    expect(
      qimg(["convert", "-n", "-S", "0", "-f", "raw", "-O", "raw", dirty, `${uri}&multi-conn=1`]).status,
    ).toBe(0);
    const before = ops(log).length;
    const r = qimg(["convert", "-n", "-f", "raw", "-O", "raw", p, uri]);
    expect(r.status, r.stderr).toBe(0);
    const mine = ops(log).slice(before);
    expect(mine[0]).toEqual(["Zero", 0, 8 << 20, true]);
    expect(mine.slice(1).every(([op]) => op === "Write")).toBe(true);
    expect(mine.slice(1).reduce((s, [, , n]) => s + n, 0)).toBe((1 << 20) + 65536);
    const back = t.path("fz-back.raw");
    expect(qimg(["convert", "-f", "raw", "-O", "raw", uri, back]).status).toBe(0);
    expect(readFileSync(back).equals(b)).toBe(true);
  });

  for (const mode of ["none", "slow"]) {
    it(`falls back to zeroing each zero range (fastzeromode=${mode})`, async () => {
      const { p, b } = src();
      const { uri, log } = await target(`fz-${mode}`, [
        "--filter=nozero",
        "zeromode=plugin",
        `fastzeromode=${mode}`,
      ]);
      const r = qimg(["convert", "-n", "-f", "raw", "-O", "raw", p, uri]);
      expect(r.status, r.stderr).toBe(0);
      const all = ops(log);
      const fast = all.filter(([op, , , f]) => op === "Zero" && f);
      // slow: one fast zero asked and refused with ENOTSUP; none: never asked.
      expect(fast.length).toBe(mode === "slow" ? 1 : 0);
      const zeros = all.filter(([op, , , f]) => op === "Zero" && !f);
      expect(zeros.reduce((s, [, , n]) => s + n, 0)).toBe((8 << 20) - (1 << 20) - 65536);
      const back = t.path(`fz-${mode}.raw`);
      expect(qimg(["convert", "-f", "raw", "-O", "raw", uri, back]).status).toBe(0);
      expect(readFileSync(back).equals(b)).toBe(true);
    });
  }
});
