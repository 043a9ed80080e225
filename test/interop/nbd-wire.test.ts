/**
 * The rest of issue #8: a top-level `driver=nbd` node (`--image-opts driver=nbd,…`, `json:`,
 * `-f nbd`) described as qemu-img describes it (against qemu-nbd), and which NBD commands reach
 * the wire from the library and `convert -n` (against nbdkit's `log` filter): a raw discard is
 * `NBD_CMD_TRIM`, write zeroes is `NBD_CMD_WRITE_ZEROES` (never data writes), and convert sends
 * zero ranges as write-zeroes.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { toNodeSpec } from "../../ts/graph/open.js";
import { open } from "../../ts/index.js";
import { hasPeer, qimg, run, runOk, startOnSocket, tempDir } from "../helpers/peers.js";

const haveQemu = hasPeer("qemu-img") && hasPeer("qemu-nbd") && hasPeer("qemu-io");
const haveNbdkit = hasPeer("nbdkit");
const t = tempDir();
const servers: ChildProcess[] = [];
afterAll(() => {
  for (const s of servers) s.kill();
  t.cleanup();
});

const start = (cmd: string, args: string[], sock: string) => startOnSocket(cmd, args, sock, servers);

/** One request as nbdkit's log filter records it. */
interface Logged {
  op: string;
  offset: number;
  count: number;
  flags: string;
}

/** The requests (not their replies) in an nbdkit log file, in order. */
function requests(log: string): Logged[] {
  const out: Logged[] = [];
  for (const line of readFileSync(log, "utf8").split("\n")) {
    const m = /connection=\d+ (\w+) id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+) (.*)\.\.\.$/.exec(line);
    if (m)
      out.push({
        op: m[1],
        offset: Number.parseInt(m[2], 16),
        count: Number.parseInt(m[3], 16),
        flags: m[4],
      });
  }
  return out;
}

describe("top-level driver=nbd options", () => {
  it("takes server.*, export and tls-creds/tls-hostname at the top", () => {
    const n = toNodeSpec({
      driver: "nbd",
      server: { type: "inet", host: "srv", port: "10900" },
      export: "disk",
      "tls-creds": "tls0",
      "tls-hostname": "srv.example",
    });
    expect(n).toMatchObject({
      format: "nbd",
      filename: "nbd://srv:10900/disk",
      nbd: {
        serverType: "inet",
        host: "srv",
        port: 10900,
        export: "disk",
        tlsCreds: "tls0",
        tlsHostname: "srv.example",
      },
    });
    expect(toNodeSpec({ driver: "nbd", server: { type: "unix", path: "/s" } }).filename).toBe(
      "nbd+unix://?socket=/s",
    );
    expect(() => toNodeSpec({ driver: "nbd", export: "e" })).toThrow(/NBD server address missing/);
  });
});

describe.skipIf(!haveQemu)("top-level driver=nbd against qemu-nbd", () => {
  it("info and map equal qemu-img's for --image-opts, json: and -f nbd", async () => {
    const img = t.path("top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "16M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 5 1M 1M", "-c", "write -P 6 9M 64k", img]);
    const sock = t.path("top.sock");
    await start(
      "qemu-nbd",
      ["--persistent", "--shared=8", "-r", "-k", sock, "-f", "qcow2", "-x", "ex", img],
      sock,
    );
    const uri = `nbd+unix:///ex?socket=${sock}`;
    const opts = `driver=nbd,server.type=unix,server.path=${sock},export=ex`;
    const json = `json:${JSON.stringify({ driver: "nbd", server: { type: "unix", path: sock }, export: "ex" })}`;
    const forms = [["--image-opts", opts], [json], ["-f", "nbd", uri]];
    for (const f of forms) {
      for (const cmd of [["info"], ["info", "--output=json"], ["map", "--output=json"], ["map"]]) {
        const want = runOk("qemu-img", [...cmd, ...f]);
        if (cmd[0] === "info") expect(want).toMatch(/"format": "nbd"|file format: nbd/);
        const got = qimg([...cmd, ...f]);
        expect(got.stderr, `${cmd} ${f}`).toBe("");
        expect(got.stdout, `${cmd} ${f}`).toBe(want);
      }
    }
    // The plain URI is a raw node over the nbd protocol node, in both tools.
    expect(qimg(["info", "--output=json", uri]).stdout).toBe(
      runOk("qemu-img", ["info", "--output=json", uri]),
    );
    // The content through driver=nbd is the export's.
    const a = t.path("a.raw");
    const b = t.path("b.raw");
    expect(qimg(["convert", "--image-opts", "-O", "raw", opts, a]).status).toBe(0);
    runOk("qemu-img", ["convert", "-O", "raw", uri, b]);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    // Errors as qemu-img words them.
    for (const bad of [
      ["--image-opts", "driver=nbd,export=ex"],
      ["-f", "nbd", img],
      ["--image-opts", `driver=nbd,server.type=unix,server.path=${sock},export=nope`],
    ]) {
      const q = run("qemu-img", ["info", ...bad]);
      const r = qimg(["info", ...bad]);
      expect(q.status).toBe(1);
      expect(r.status, bad.join(" ")).toBe(1);
      const key = /NBD server address missing|must start with 'nbd:'|Requested export not available/.exec(
        q.stderr,
      );
      expect(key, q.stderr).not.toBeNull();
      expect(r.stderr).toContain((key as RegExpExecArray)[0]);
    }
  });
});

describe.skipIf(!haveNbdkit)("NBD commands on the wire (nbdkit log filter)", () => {
  async function logged(
    name: string,
    size = "4M",
    filters: string[] = [],
  ): Promise<{ uri: string; log: string }> {
    const sock = t.path(`${name}.sock`);
    const log = t.path(`${name}.log`);
    const [fl, params] = [
      filters.filter((f) => f.startsWith("--")),
      filters.filter((f) => !f.startsWith("--")),
    ];
    await start(
      "nbdkit",
      ["-f", "-U", sock, ...fl, "--filter=log", "memory", size, `logfile=${log}`, ...params],
      sock,
    );
    return { uri: `nbd+unix:///?socket=${sock}`, log };
  }

  it("library discard sends TRIM and writeZeroes sends WRITE_ZEROES, never data", async () => {
    const { uri, log } = await logged("lib");
    const img = await open(uri, { format: "raw" });
    try {
      await img.write(0, Buffer.alloc(256 * 1024, 7));
      await img.discard(0, 64 * 1024);
      await img.writeZeroes(64 * 1024, 64 * 1024);
      await img.writeZeroes(128 * 1024, 64 * 1024, { mayUnmap: true });
      await img.flush();
    } finally {
      await img.close();
    }
    const after = (r: Logged) => r.offset < 256 * 1024 && r.op !== "Write";
    const ops = requests(log).filter((r) => r.op !== "Extents" && r.op !== "Pread");
    expect(ops[0]).toMatchObject({ op: "Write", offset: 0, count: 256 * 1024 });
    expect(ops.filter(after)).toEqual([
      { op: "Trim", offset: 0, count: 65536, flags: "fua=0 " },
      { op: "Zero", offset: 65536, count: 65536, flags: "trim=0 fua=0 fast=0 " },
      { op: "Zero", offset: 131072, count: 65536, flags: "trim=1 fua=0 fast=0 " },
    ]);
    expect(ops.filter((r) => r.op === "Write")).toHaveLength(1);
  });

  it("write with fua carries NBD_CMD_FLAG_FUA, or is followed by a flush when the server has no FUA", async () => {
    // nbdkit's fua filter (default fuamode=none) hides FUA from the client.
    for (const [name, filters, native] of [
      ["fua", [], true],
      ["nofua", ["--filter=fua"], false],
    ] as const) {
      const { uri, log } = await logged(name, "1M", [...filters]);
      const img = await open(uri, { format: "raw" });
      const flushes = () =>
        readFileSync(log, "utf8")
          .split("\n")
          .filter((l) => / Flush id=/.test(l)).length;
      try {
        await img.write(0, Buffer.alloc(4096, 1), { fua: true });
        const afterFua = flushes();
        await img.write(4096, Buffer.alloc(4096, 2));
        expect(flushes()).toBe(afterFua); // a plain write is not flushed
        const writes = requests(log).filter((r) => r.op === "Write");
        expect(writes.map((w) => [w.offset, w.flags])).toEqual([
          [0, native ? "fua=1 " : "fua=0 "],
          [4096, "fua=0 "],
        ]);
        // Without FUA on the wire the write was made durable by a flush before it resolved.
        if (native) expect(afterFua).toBe(0);
        else expect(afterFua).toBeGreaterThan(0);
      } finally {
        await img.close();
      }
    }
  });

  it("convert -t writethrough|directsync into an export sends every write with FUA", async () => {
    const src = t.path("wt-src.raw");
    writeFileSync(src, Buffer.alloc(1 << 20, 9));
    for (const mode of ["writethrough", "directsync", "writeback"]) {
      const { uri, log } = await logged(`wt-${mode}`, "1M");
      const r = qimg(["convert", "-n", "-t", mode, "-f", "raw", "-O", "raw", src, uri]);
      expect(r.status, r.stderr).toBe(0);
      const writes = requests(log).filter((o) => o.op === "Write");
      expect(writes.length).toBeGreaterThan(0);
      const fua = mode === "writeback" ? "fua=0 " : "fua=1 ";
      for (const w of writes) expect([mode, w.flags]).toEqual([mode, fua]);
    }
  });

  it("convert -n sends zero ranges as WRITE_ZEROES and writes only data", async () => {
    // A server without fast zero: no up-front zeroing (see nbd-multiconn.test.ts for that).
    const { uri, log } = await logged("conv", "4M", [
      "--filter=nozero",
      "zeromode=plugin",
      "fastzeromode=none",
    ]);
    const src = t.path("src.raw");
    const buf = Buffer.alloc(4 << 20);
    buf.fill(3, 0, 1 << 20);
    buf.fill(4, 3 << 20, (3 << 20) + 65536);
    writeFileSync(src, buf); // zeros written as data: found by zero detection
    const r = qimg(["convert", "-n", "-f", "raw", "-O", "raw", src, uri]);
    expect(r.status, r.stderr).toBe(0);
    const ops = requests(log);
    const writes = ops.filter((o) => o.op === "Write");
    const zeros = ops.filter((o) => o.op === "Zero");
    const sum = (l: Logged[]) => l.reduce((s, o) => s + o.count, 0);
    expect(sum(writes)).toBe((1 << 20) + 65536);
    for (const w of writes) {
      const inData =
        w.offset + w.count <= 1 << 20 || (w.offset >= 3 << 20 && w.offset + w.count <= (3 << 20) + 65536);
      expect(inData, JSON.stringify(w)).toBe(true);
    }
    expect(sum(zeros)).toBe((4 << 20) - (1 << 20) - 65536);
    for (const z of zeros) expect(z.flags).toContain("trim=1");
    // And the export now holds the source.
    const back = t.path("back.raw");
    expect(qimg(["convert", "-f", "raw", "-O", "raw", uri, back]).status).toBe(0);
    expect(readFileSync(back).equals(buf)).toBe(true);
  });
});
