/**
 * `serve()` and `qimg serve` against real NBD clients: nbdinfo (`--map` equal to `qimg map`),
 * nbdcopy, `qemu-img info/convert/compare nbd://…` and qemu-io writes (read back by qimg after the
 * server stopped); qcow2 chains and raw, Unix sockets and TCP, named exports, read-only refusal,
 * SIGTERM, the non-persistent stop after the last client, TLS (PSK and x509, made by psktool and
 * certtool) and the CLI's option errors.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { map, open, serve } from "../../ts/index.js";
import { hasPeer, QIMG, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const haveQemu = hasPeer("qemu-img") && hasPeer("qemu-io");
const haveNbd = hasPeer("nbdinfo") && hasPeer("nbdcopy");
if (!haveNbd) console.warn("SKIP: nbdinfo/nbdcopy missing (apt-get install libnbd-bin)");
const have = haveQemu && haveNbd;
const haveTls = have && hasPeer("psktool") && hasPeer("certtool");
if (!haveTls) console.warn("SKIP: psktool/certtool missing (apt-get install gnutls-bin): TLS tests skip");
const t = tempDir("qimg-serve-");
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  t.cleanup();
});

const unixUri = (sock: string, name = "") => `nbd+unix:///${name}?socket=${sock}`;

/** A qcow2 over a qcow2 backing file with data in both layers and a zero cluster. */
function makeChain(tag: string): { base: string; top: string } {
  const base = t.path(`${tag}-base.qcow2`);
  const top = t.path(`${tag}-top.qcow2`);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, "32M"]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 6M", base]);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 1M 2M", "-c", "write -z 4M 128k", top]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x33 20M 300k", top]);
  return { base, top };
}

/** `nbdinfo --map` as runs of a context's values (base:allocation: 1 hole, 2 zero), equal neighbours merged. */
function nbdinfoRuns(uri: string, context = "base:allocation"): Array<[number, number, number]> {
  const out: Array<[number, number, number]> = [];
  for (const line of runOk("nbdinfo", [`--map=${context}`, uri]).split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)/.exec(line);
    if (m) push(out, Number(m[1]), Number(m[2]), Number(m[3]));
  }
  return out;
}

function push(out: Array<[number, number, number]>, start: number, length: number, flags: number): void {
  const last = out[out.length - 1];
  if (last && last[2] === flags && last[0] + last[1] === start) last[1] += length;
  else out.push([start, length, flags]);
}

/** A qimg map (JSON shape) as the same runs: hole = no data, zero = reads as zeros. */
function mapRuns(entries: Array<{ start: number; length: number; data: boolean; zero: boolean }>) {
  const out: Array<[number, number, number]> = [];
  for (const e of entries) push(out, e.start, e.length, (e.data ? 0 : 1) | (e.zero ? 2 : 0));
  return out;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > 15_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Start `qimg serve ARGS` and wait until `ready` (or the URI line with `-p 0`). */
async function startCli(args: string[], ready?: () => boolean) {
  const p = spawn(process.execPath, [QIMG, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(p);
  let stdout = "";
  let stderr = "";
  p.stdout?.on("data", (d) => {
    stdout += d;
  });
  p.stderr?.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((r) => p.on("exit", (code) => r(code)));
  await until(() => (ready ? ready() : stdout.includes("\n")) || p.exitCode !== null, "qimg serve");
  if (p.exitCode !== null) throw new Error(`qimg serve exited: ${stderr}`);
  return { p, exited, stdout: () => stdout, stderr: () => stderr };
}

describe.skipIf(!have)("serve() library", () => {
  it("exports a qcow2 chain: nbdinfo --map equals qimg map, qemu-img and nbdcopy read it exactly", async () => {
    const { top } = makeChain("lib");
    const sock = t.path("lib.sock");
    const expected = t.path("lib-expected.raw");
    runOk("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", top, expected]);
    const qimgMap = await map(top, { format: "qcow2" });
    const srv = await serve(top, {
      format: "qcow2",
      socket: sock,
      readOnly: true,
      persistent: true,
      shared: 4,
      allocationDepth: true,
    });
    try {
      expect(srv.uri).toBe(unixUri(sock));
      expect(srv.socketPath).toBe(sock);
      const runs = nbdinfoRuns(srv.uri);
      expect(runs).toEqual(mapRuns(qimgMap));
      // qemu:allocation-depth: 0 where no layer allocates, else the map's depth + 1.
      const depth: Array<[number, number, number]> = [];
      for (const e of qimgMap) push(depth, e.start, e.length, e.present ? e.depth + 1 : 0);
      expect(nbdinfoRuns(srv.uri, "qemu:allocation-depth")).toEqual(depth);
      expect(new Set(depth.map((d) => d[2]))).toEqual(new Set([0, 1, 2]));
      expect(runs.some((r) => r[2] === 0) && runs.some((r) => r[2] === 3)).toBe(true);
      const info = JSON.parse(runOk("qemu-img", ["info", "--output=json", srv.uri]));
      expect(info["virtual-size"]).toBe(32 << 20);
      expect(run("qemu-img", ["compare", "-f", "raw", "-F", "raw", srv.uri, expected]).status).toBe(0);
      const conv = t.path("lib-conv.raw");
      runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", srv.uri, conv]);
      expect(sha256(conv)).toBe(sha256(expected));
      const copy = t.path("lib-copy.raw");
      runOk("nbdcopy", [srv.uri, copy]);
      expect(sha256(copy)).toBe(sha256(expected));
      // Read-only: qemu-io cannot open it for writing.
      expect(run("qemu-io", ["-f", "raw", "-c", "write 0 4k", srv.uri]).status).not.toBe(0);
    } finally {
      await srv.close();
    }
    expect(existsSync(sock)).toBe(false);
    await srv.closed;
  });

  it("qimg's own NBD client reads it back (map, convert) and a killed nbdcopy leaves it serving", async () => {
    const { top } = makeChain("own");
    const sock = t.path("own.sock");
    const expected = t.path("own-expected.raw");
    runOk("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", top, expected]);
    const local = await map(top, { format: "qcow2" });
    const srv = await serve(top, { format: "qcow2", socket: sock, persistent: true, shared: 0 });
    try {
      const remote = JSON.parse(qimg(["map", "--output=json", "-f", "raw", srv.uri]).stdout);
      expect(mapRuns(remote)).toEqual(mapRuns(local));
      const conv = t.path("own-conv.raw");
      const r = qimg(["convert", "-f", "raw", "-O", "raw", srv.uri, conv]);
      expect(r.stderr).toBe("");
      expect(sha256(conv)).toBe(sha256(expected));
      // A real client killed in the middle of a copy into the export (requests in flight).
      const big = t.path("own-src.raw");
      writeFileSync(big, Buffer.alloc(32 << 20, 0x5e));
      const cp = spawn("nbdcopy", ["--requests=16", big, srv.uri], { stdio: "ignore" });
      children.push(cp);
      await until(() => srv.connections > 0 || cp.exitCode !== null, "nbdcopy to connect");
      await new Promise((res) => setTimeout(res, 30));
      cp.kill("SIGKILL");
      await until(() => srv.connections === 0, "the killed client to be dropped");
      // Still serving, and whatever was written reads back consistently.
      const after = t.path("own-after.raw");
      runOk("nbdcopy", [srv.uri, after]);
      expect(readFileSync(after).length).toBe(32 << 20);
    } finally {
      await srv.close();
    }
    const chk = run("qemu-img", ["check", top]);
    expect(chk.stdout + chk.stderr).toContain("No errors");
    expect(chk.status).toBe(0);
  });

  it("runs more servers than libuv has worker threads without starving other I/O", async () => {
    const servers = [];
    for (let i = 0; i < 6; i++) {
      const raw = t.path(`many${i}.raw`);
      writeFileSync(raw, Buffer.alloc(65536, i + 1));
      servers.push(await serve(raw, { format: "raw", socket: t.path(`many${i}.sock`), persistent: true }));
    }
    try {
      // Library I/O on the thread pool still runs while all of them wait for clients.
      const img = await open(t.path("many0.raw"), { format: "raw", readOnly: true, forceShare: true });
      expect((await img.read(0, 16)).every((x) => x === 1)).toBe(true);
      await img.close();
      for (const [i, srv] of servers.entries()) {
        const out = t.path(`many${i}.out`);
        runOk("nbdcopy", [srv.uri, out]);
        expect(readFileSync(out).every((x) => x === i + 1)).toBe(true);
      }
    } finally {
      await Promise.all(servers.map((s) => s.close()));
    }
  });

  it("serves an Image the caller opened, over TCP on an OS-chosen port, and leaves it open", async () => {
    const raw = t.path("own.raw");
    writeFileSync(raw, Buffer.alloc(4 << 20, 0x7e));
    const img = await open(raw, { format: "raw" });
    const srv = await serve(img, { bind: "127.0.0.1", port: 0, exportName: "own", persistent: true });
    try {
      expect(srv.port).toBeGreaterThan(0);
      expect(srv.uri).toBe(`nbd://127.0.0.1:${srv.port}/own`);
      const o = runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x01 1M 64k", "-c", "flush", srv.uri]);
      expect(o).toContain("wrote 65536/65536");
      // The export name matters.
      expect(run("qemu-img", ["info", `nbd://127.0.0.1:${srv.port}/other`]).status).not.toBe(0);
    } finally {
      await srv.close();
    }
    const b = await img.read(1 << 20, 65536);
    expect(b.every((x) => x === 1)).toBe(true);
    await img.close();
  });
});

/** A CA, a server certificate for 127.0.0.1 and a client certificate in `dir` (QEMU's layout). */
function makeX509(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const p = (n: string) => join(dir, n);
  const tmpl = (n: string, body: string) => {
    writeFileSync(p(n), body);
    return p(n);
  };
  runOk("certtool", ["--generate-privkey", "--outfile", p("ca-key.pem")]);
  const ca = tmpl("ca.info", "cn = qimg serve test CA\nca\ncert_signing_key\nexpiration_days = 2\n");
  runOk("certtool", [
    "--generate-self-signed",
    "--load-privkey",
    p("ca-key.pem"),
    "--template",
    ca,
    "--outfile",
    p("ca-cert.pem"),
  ]);
  const who = {
    server:
      "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n",
    client: "cn = qimg client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n",
  };
  for (const [w, body] of Object.entries(who)) {
    runOk("certtool", ["--generate-privkey", "--outfile", p(`${w}-key.pem`)]);
    runOk("certtool", [
      "--generate-certificate",
      "--load-privkey",
      p(`${w}-key.pem`),
      "--load-ca-certificate",
      p("ca-cert.pem"),
      "--load-ca-privkey",
      p("ca-key.pem"),
      "--template",
      tmpl(`${w}.info`, body),
      "--outfile",
      p(`${w}-cert.pem`),
    ]);
  }
}

describe.skipIf(!haveTls)("qimg serve --tls-creds", () => {
  it("PSK: nbdinfo, nbdcopy and qemu-img connect with the key; plain clients are refused", async () => {
    const psk = t.path("psk");
    mkdirSync(psk);
    runOk("psktool", ["-u", "qemu", "-p", join(psk, "keys.psk")]);
    const img = t.path("psk.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "8M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x61 1M 1M", img]);
    const expected = t.path("psk-expected.raw");
    runOk("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", img, expected]);
    const s = await startCli([
      "--object",
      `tls-creds-psk,id=tls0,dir=${psk},endpoint=server`,
      "--tls-creds",
      "tls0",
      "-f",
      "qcow2",
      "-t",
      "-e",
      "0",
      "-b",
      "127.0.0.1",
      "-p",
      "0",
      img,
    ]);
    const uri = s.stdout().trim();
    expect(uri).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/$/);
    const port = Number(/:(\d+)\//.exec(uri)?.[1]);
    const tlsUri = `nbds://qemu@127.0.0.1:${port}/?tls-psk-file=${join(psk, "keys.psk")}`;
    expect(runOk("nbdinfo", [tlsUri])).toContain("with TLS");
    const copy = t.path("psk-copy.raw");
    runOk("nbdcopy", [tlsUri, copy]);
    expect(sha256(copy)).toBe(sha256(expected));
    const r = run("qemu-img", [
      "compare",
      "--object",
      `tls-creds-psk,id=tls0,endpoint=client,dir=${psk}`,
      "--image-opts",
      `driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=${port},file.tls-creds=tls0`,
      `driver=raw,file.filename=${expected}`,
    ]);
    expect(r.stdout + r.stderr).toContain("Images are identical");
    // Without TLS: refused (qemu-img says TLS is required), never served in clear text.
    const plain = run("qemu-img", ["info", `nbd://127.0.0.1:${port}/`]);
    expect(plain.status).not.toBe(0);
    expect(plain.stderr).toMatch(/TLS/);
    // A wrong key: the TLS handshake fails.
    const bad = t.path("psk-bad");
    mkdirSync(bad);
    runOk("psktool", ["-u", "qemu", "-p", join(bad, "keys.psk")]);
    expect(
      run("nbdinfo", [`nbds://qemu@127.0.0.1:${port}/?tls-psk-file=${join(bad, "keys.psk")}`]).status,
    ).not.toBe(0);
    s.p.kill("SIGTERM");
    expect(await s.exited).toBe(0);
  });

  it("x509: a client with a certificate from the CA reads the export, one without is refused", async () => {
    const dir = t.path("x509");
    makeX509(dir);
    const raw = t.path("x509.raw");
    writeFileSync(raw, Buffer.alloc(1 << 20, 0x3c));
    const s = await startCli([
      "--object",
      `tls-creds-x509,id=tls0,dir=${dir},endpoint=server`,
      "--tls-creds",
      "tls0",
      "-f",
      "raw",
      "-r",
      "-t",
      "-x",
      "secure",
      "-b",
      "127.0.0.1",
      "-p",
      "0",
      raw,
    ]);
    const port = Number(/:(\d+)\//.exec(s.stdout())?.[1]);
    const info = run("qemu-img", [
      "info",
      "--output=json",
      "--object",
      `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`,
      "--image-opts",
      `driver=nbd,host=127.0.0.1,port=${port},export=secure,tls-creds=tls0`,
    ]);
    expect(info.stderr).toBe("");
    expect(JSON.parse(info.stdout)["virtual-size"]).toBe(1 << 20);
    const copy = t.path("x509-copy.raw");
    runOk("nbdcopy", [`nbds://127.0.0.1:${port}/secure?tls-certificates=${dir}`, copy]);
    expect(sha256(copy)).toBe(sha256(raw));
    // verify-peer is on by default: a client without a certificate is refused.
    const nocert = t.path("x509-nocert");
    mkdirSync(nocert);
    writeFileSync(join(nocert, "ca-cert.pem"), readFileSync(join(dir, "ca-cert.pem")));
    expect(run("nbdinfo", [`nbds://127.0.0.1:${port}/secure?tls-certificates=${nocert}`]).status).not.toBe(0);
    s.p.kill("SIGTERM");
    expect(await s.exited).toBe(0);
  });

  it("refuses credentials that are missing, of the wrong type or a client endpoint", () => {
    const raw = t.path("tlsopt.raw");
    writeFileSync(raw, Buffer.alloc(65536));
    const cases: Array<[string[], RegExp]> = [
      [["--tls-creds", "tls0"], /No TLS credentials with id 'tls0'/],
      [["--object", "secret,id=tls0,data=x", "--tls-creds", "tls0"], /is not TLS credentials/],
      [["--object", `tls-creds-psk,id=tls0,dir=${t.dir}`, "--tls-creds", "tls0"], /server endpoint/],
      [
        ["--object", `tls-creds-psk,id=tls0,dir=${t.path("nope")},endpoint=server`, "--tls-creds", "tls0"],
        /keys\.psk/,
      ],
    ];
    for (const [args, msg] of cases) {
      const r = qimg(["serve", ...args, "-f", "raw", "-k", t.path("tlsopt.sock"), raw]);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});

describe.skipIf(!have)("qimg serve", () => {
  it("takes qemu-io writes over TCP (named export), stops after the last client, qimg reads them back", async () => {
    const { top } = makeChain("cli");
    const s = await startCli(["-f", "qcow2", "-x", "disk", "-b", "127.0.0.1", "-p", "0", top]);
    const uri = s.stdout().trim();
    expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
    const o = runOk("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0x44 512k 1M",
      "-c",
      "write -z 2M 256k",
      "-c",
      "discard 24M 1M",
      "-c",
      "flush",
      uri,
    ]);
    expect(o).not.toContain("failed");
    // Not persistent: the client left, so the server exits 0 and releases the image.
    expect(await s.exited).toBe(0);
    const img = await open(top, { format: "qcow2", readOnly: true });
    try {
      const b = await img.read(0, 3 << 20);
      expect(b.subarray(0, 512 << 10).every((x) => x === 0x11)).toBe(true);
      expect(b.subarray(512 << 10, 1536 << 10).every((x) => x === 0x44)).toBe(true);
      expect(b.subarray(1536 << 10, 2 << 20).every((x) => x === 0x22)).toBe(true);
      expect(b.subarray(2 << 20, (2 << 20) + (256 << 10)).every((x) => x === 0)).toBe(true);
      expect(b.subarray((2 << 20) + (256 << 10)).every((x) => x === 0x22)).toBe(true);
    } finally {
      await img.close();
    }
    expect(run("qemu-img", ["check", top]).status).toBe(0);
  });

  it("serves raw read-only on a Unix socket until SIGTERM, then releases the locks", async () => {
    const raw = t.path("ro.raw");
    writeFileSync(raw, Buffer.alloc(2 << 20, 0x5a));
    const sock = t.path("ro.sock");
    const pidFile = t.path("ro.pid");
    const s = await startCli(
      ["-f", "raw", "-r", "-t", "-e", "2", "-D", "test disk", "-k", sock, "--pid-file", pidFile, raw],
      () => existsSync(sock),
    );
    await until(() => existsSync(pidFile), "the pid file");
    expect(readFileSync(pidFile, "utf8")).toBe(`${s.p.pid}\n`);
    const uri = unixUri(sock);
    const info = JSON.parse(runOk("nbdinfo", ["--json", uri]));
    const e = info.exports[0];
    expect(e["export-size"]).toBe(2 << 20);
    expect(e.is_read_only).toBe(true);
    expect(e.description).toBe("test disk");
    // OPT_LIST names the export with its description too.
    const list = JSON.parse(runOk("nbdinfo", ["--list", "--json", uri]));
    expect(list.exports.map((x: { description?: string }) => x.description)).toEqual(["test disk"]);
    expect(run("qemu-io", ["-f", "raw", "-c", "write 0 4k", uri]).status).not.toBe(0);
    // Persistent: a second client after the first one left.
    expect(runOk("nbdinfo", ["--size", uri]).trim()).toBe(String(2 << 20));
    // Serving holds the image's (reader's) lock: a writer is refused while it runs.
    expect(run("qemu-io", ["-f", "raw", "-c", "write 0 4k", raw]).status).not.toBe(0);
    s.p.kill("SIGTERM");
    expect(await s.exited).toBe(0);
    expect(existsSync(sock)).toBe(false);
    expect(existsSync(pidFile)).toBe(false);
    expect(run("qemu-io", ["-f", "raw", "-c", "write 0 4k", raw]).status).toBe(0);
    expect(
      readFileSync(raw)
        .subarray(4096)
        .every((x) => x === 0x5a),
    ).toBe(true);
  });

  it.skipIf(!hasPeer("qemu-nbd") || !existsSync("/proc/locks"))(
    "holds qemu-nbd's lock set on the image (read-write and -r)",
    async () => {
      const img = t.path("locks.qcow2");
      runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "16M"]);
      const ino = statSync(img).ino;
      const held = () =>
        readFileSync("/proc/locks", "utf8")
          .split("\n")
          .filter((l) => l.includes(`:${ino} `))
          .map((l) => l.trim().split(/\s+/).slice(-2).join("-"))
          .sort();
      // Persistent, and ready once a client got its answer: the permissions are final by then.
      const ready = (sock: string) =>
        existsSync(sock) && run("nbdinfo", ["--size", unixUri(sock)]).status === 0;
      for (const ro of [["-t"], ["-t", "-r"]]) {
        const sock = t.path(`locks${ro.length}.sock`);
        const q = spawn("qemu-nbd", [...ro, "-f", "qcow2", "-k", sock, img], { stdio: "ignore" });
        children.push(q);
        await until(() => ready(sock), "qemu-nbd");
        const want = held();
        const qExit = new Promise((r) => q.on("exit", r));
        q.kill("SIGTERM");
        await qExit;
        const s = await startCli([...ro, "-f", "qcow2", "-k", sock, img], () => ready(sock));
        expect(held(), `locks with ${ro.join(" ")}`).toEqual(want);
        expect(want.length).toBeGreaterThan(0);
        s.p.kill("SIGTERM");
        expect(await s.exited).toBe(0);
        expect(held()).toEqual([]);
      }
    },
  );

  it("fails like qemu-nbd on bad options and images", () => {
    const raw = t.path("opt.raw");
    writeFileSync(raw, Buffer.alloc(65536));
    const cases: Array<[string[], RegExp]> = [
      [["-p", "70000", raw], /Invalid port number '70000'/],
      [["-e", "x", raw], /Invalid shared device number 'x'/],
      [[], /Invalid number of arguments/],
      [[raw, raw], /Invalid number of arguments/],
      [["-f", "qcow2", "-k", t.path("x.sock"), raw], /qcow2/],
      [["-k", t.path("y.sock"), t.path("missing.raw")], /missing\.raw/],
    ];
    for (const [args, msg] of cases) {
      const r = qimg(["serve", ...args]);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});
