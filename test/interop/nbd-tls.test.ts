/**
 * The NBD client's TLS, listing and failure paths through the CLI and the library, against real
 * servers: qemu-nbd with `--object tls-creds-psk` (Unix socket) and `tls-creds-x509` (TCP,
 * certificates made here with certtool), where `qimg info/map/convert` with `--object
 * tls-creds-…,endpoint=client` and `file.tls-creds=` equal qemu-img's; a TLS server without
 * credentials fails clearly; qemu-nbd `-A` (allocation depth) leaves `map` equal to qemu-img's;
 * nbdkit's `error` filter makes convert fail instead of writing zeros; nbdkit's `exportname`
 * filter is listed by `listNbdExports` and `qimg list-exports` as `nbdinfo --list` lists it;
 * nbdkit's `delay` filter shows `convert -m 8` keeping its reads in flight together. Skips with a printed reason when a peer is missing.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { parseNbdOptions, parseNbdString } from "../../ts/graph/nbd.js";
import { clearObjects, defineObjects, resolveTls } from "../../ts/graph/tls.js";
import { listNbdExports } from "../../ts/index.js";
import { hasPeer, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const haveQemu = hasPeer("qemu-img") && hasPeer("qemu-nbd") && hasPeer("qemu-io");
const haveGnutls = hasPeer("certtool") && hasPeer("psktool");
const haveNbdkit = hasPeer("nbdkit");
const t = tempDir();
const servers: ChildProcess[] = [];
afterAll(() => {
  for (const s of servers) s.kill();
  t.cleanup();
});

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => res(typeof a === "object" && a ? a.port : 0));
    });
  });
}

async function serve(cmd: string, args: string[], ready: () => boolean): Promise<ChildProcess> {
  const p = spawn(cmd, args, { stdio: "ignore" });
  servers.push(p);
  const t0 = Date.now();
  while (!ready()) {
    if (Date.now() - t0 > 15_000) throw new Error(`${cmd} did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}

function makeX509(dir: string): void {
  runOk("mkdir", ["-p", dir]);
  const p = (n: string) => `${dir}/${n}`;
  runOk("certtool", ["--generate-privkey", "--outfile", p("ca-key.pem")]);
  writeFileSync(p("ca.info"), "cn = qimg test CA\nca\ncert_signing_key\nexpiration_days = 3\n");
  runOk("certtool", [
    "--generate-self-signed",
    "--load-privkey",
    p("ca-key.pem"),
    "--template",
    p("ca.info"),
    "--outfile",
    p("ca-cert.pem"),
  ]);
  const who: [string, string][] = [
    [
      "server",
      "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 3\n",
    ],
    ["client", "cn = qimg client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 3\n"],
  ];
  for (const [w, body] of who) {
    runOk("certtool", ["--generate-privkey", "--outfile", p(`${w}-key.pem`)]);
    writeFileSync(p(`${w}.info`), body);
    runOk("certtool", [
      "--generate-certificate",
      "--load-privkey",
      p(`${w}-key.pem`),
      "--load-ca-certificate",
      p("ca-cert.pem"),
      "--load-ca-privkey",
      p("ca-key.pem"),
      "--template",
      p(`${w}.info`),
      "--outfile",
      p(`${w}-cert.pem`),
    ]);
  }
}

function image(name: string): string {
  const img = t.path(name);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "16M"]);
  runOk("qemu-io", [
    "-f",
    "qcow2",
    "-c",
    "write -P 5 1M 3M",
    "-c",
    "write -z 8M 1M",
    "-c",
    "write -P 6 12M 7k",
    img,
  ]);
  return img;
}

describe("TLS settings of NBD addresses", () => {
  it("parses tls-creds / tls-hostname and resolves --object definitions as QEMU does", () => {
    expect(parseNbdString("nbd://h/e?tls-creds=t0&tls-hostname=example.org")).toEqual({
      serverType: "inet",
      host: "h",
      port: undefined,
      export: "e",
      tlsCreds: "t0",
      tlsHostname: "example.org",
    });
    expect(
      parseNbdOptions({ server: { type: "unix", path: "/s" }, export: "", "tls-creds": "t1" }).tlsCreds,
    ).toBe("t1");
    expect(() => parseNbdString("nbd://h/e?tls-hostname=x")).toThrow(/only valid with tls-creds/);
    expect(() => parseNbdString("nbd://h/e?bogus=1")).toThrow(/unknown parameter/);
    clearObjects();
    defineObjects([
      "tls-creds-psk,id=p,dir=/d,endpoint=client,username=alice",
      "tls-creds-x509,id=x,dir=/c,verify-peer=off",
      "tls-creds-psk,id=s,dir=/d,endpoint=server",
      "secret,id=sec,data=x",
    ]);
    expect(resolveTls("p")).toEqual({ kind: "psk", dir: "/d", username: "alice" });
    expect(resolveTls("x", "h")).toEqual({ kind: "x509", dir: "/c", verifyPeer: false, hostname: "h" });
    expect(() => resolveTls("s")).toThrow("Expected TLS credentials for a client endpoint");
    expect(() => resolveTls("sec")).toThrow("Object with id 'sec' is not TLS credentials");
    expect(() => resolveTls("nope")).toThrow("No TLS credentials with id 'nope'");
    clearObjects();
  });
});

describe.skipIf(!haveQemu || !haveGnutls)("NBD over TLS against qemu-nbd", () => {
  it("PSK over a Unix socket: info, map and convert equal qemu-img's; no creds is a clear error", async () => {
    const img = image("psk.qcow2");
    const keys = t.path("psk");
    runOk("mkdir", ["-p", keys]);
    runOk("psktool", ["-u", "qemu", "-p", `${keys}/keys.psk`]);
    const sock = t.path("psk.sock");
    await serve(
      "qemu-nbd",
      [
        "--persistent",
        "--shared=8",
        "-r",
        "--object",
        `tls-creds-psk,id=tls0,dir=${keys},endpoint=server`,
        "--tls-creds",
        "tls0",
        "-k",
        sock,
        "-f",
        "raw",
        "-x",
        "e",
        img,
      ],
      () => existsSync(sock),
    );
    const obj = ["--object", `tls-creds-psk,id=tls0,dir=${keys},endpoint=client`];
    const opts = `driver=qcow2,file.driver=nbd,file.server.type=unix,file.server.path=${sock},file.export=e,file.tls-creds=tls0`;
    for (const cmd of [["info"], ["info", "--output=json"], ["map", "--output=json"]]) {
      const want = runOk("qemu-img", [...cmd, ...obj, "--image-opts", opts]);
      const got = qimg([...cmd, ...obj, "--image-opts", opts]);
      expect(got.stderr, cmd.join(" ")).toBe("");
      expect(got.stdout, cmd.join(" ")).toBe(want);
    }
    const want = t.path("psk-want.raw");
    runOk("qemu-img", ["convert", ...obj, "--image-opts", opts, "-O", "raw", want]);
    const got = t.path("psk-got.raw");
    const r = qimg([
      "convert",
      "-m",
      "8",
      ...obj,
      "-O",
      "raw",
      `nbd+unix:///e?socket=${sock}&tls-creds=tls0`,
      got,
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(sha256(readFileSync(got))).toBe(sha256(readFileSync(want)));
    const json = `json:{"driver":"qcow2","file":{"driver":"nbd","server":{"type":"unix","path":"${sock}"},"export":"e","tls-creds":"tls0"}}`;
    const got2 = t.path("psk-got2.raw");
    expect(qimg(["convert", ...obj, "-O", "raw", json, got2]).status).toBe(0);
    expect(sha256(readFileSync(got2))).toBe(sha256(readFileSync(want)));

    // The export itself as the image (top-level driver=nbd) with tls-creds there.
    const top = `driver=nbd,server.type=unix,server.path=${sock},export=e,tls-creds=tls0`;
    const topWant = runOk("qemu-img", ["info", "--output=json", ...obj, "--image-opts", top]);
    expect(topWant).toContain('"format": "nbd"');
    expect(qimg(["info", "--output=json", ...obj, "--image-opts", top]).stdout).toBe(topWant);

    const none = qimg(["info", `nbd+unix:///e?socket=${sock}`]);
    expect(none.status).toBe(1);
    expect(none.stderr).toContain("requires TLS");
    const missing = qimg(["info", `nbd+unix:///e?socket=${sock}&tls-creds=tls9`]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("No TLS credentials with id 'tls9'");
  });

  it("x509 over TCP with tls-hostname; a wrong hostname fails verification", async () => {
    const img = image("x509.qcow2");
    const certs = t.path("x509");
    makeX509(certs);
    const port = await freePort();
    await serve(
      "qemu-nbd",
      [
        "--persistent",
        "-r",
        "--object",
        `tls-creds-x509,id=tls0,dir=${certs},endpoint=server,verify-peer=on`,
        "--tls-creds",
        "tls0",
        "-b",
        "127.0.0.1",
        "-p",
        String(port),
        "-f",
        "raw",
        "-x",
        "x",
        img,
      ],
      () => run("bash", ["-c", `exec 3<>/dev/tcp/127.0.0.1/${port}`]).status === 0,
    );
    const obj = ["--object", `tls-creds-x509,id=tls0,dir=${certs},endpoint=client`];
    const opts = (host: string) =>
      `driver=qcow2,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=${port},file.export=x,file.tls-creds=tls0,file.tls-hostname=${host}`;
    const want = runOk("qemu-img", ["info", "--output=json", ...obj, "--image-opts", opts("localhost")]);
    const got = qimg(["info", "--output=json", ...obj, "--image-opts", opts("localhost")]);
    expect(got.stderr).toBe("");
    expect(got.stdout).toBe(want);
    const bad = qimg(["info", ...obj, "--image-opts", opts("wrong.example")]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("certificate");
    expect(run("qemu-img", ["info", ...obj, "--image-opts", opts("wrong.example")]).status).toBe(1);
  });
});

describe.skipIf(!haveQemu)("allocation depth (qemu-nbd -A)", () => {
  it("map over an export with allocation depth equals qemu-img's", async () => {
    const base = t.path("base.qcow2");
    const top = t.path("top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, "8M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 1M", base]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 2 2M 1M", "-c", "write -z 4M 1M", top]);
    const sock = t.path("a.sock");
    await serve("qemu-nbd", ["--persistent", "-A", "-r", "-k", sock, "-f", "qcow2", top], () =>
      existsSync(sock),
    );
    const uri = `nbd+unix:///?socket=${sock}`;
    for (const cmd of [["map", "--output=json"], ["map"]]) {
      expect(qimg([...cmd, uri]).stdout, cmd.join(" ")).toBe(runOk("qemu-img", [...cmd, uri]));
    }
  });
});

describe.skipIf(!haveNbdkit || !haveQemu)("nbdkit", () => {
  it("injected EIO makes convert fail (never zeros); exports are listed", async () => {
    // A file with data (the file plugin reports its extents, so convert has to read it).
    const data = t.path("eio-src.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", data, "4M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 7 0 4M", data]);
    for (const extra of [[], ["--no-sr"]]) {
      const sock = t.path(`eio${extra.length}.sock`);
      await serve(
        "nbdkit",
        [
          "-f",
          "-U",
          sock,
          ...extra,
          "--filter=error",
          "file",
          data,
          "error-pread=EIO",
          "error-pread-rate=100%",
        ],
        () => existsSync(sock),
      );
      const uri = `nbd+unix:///?socket=${sock}`;
      for (const m of ["1", "8"]) {
        const out = t.path(`eio${extra.length}-${m}.raw`);
        const r = qimg(["convert", "-m", m, "-f", "raw", "-O", "raw", uri, out]);
        expect(r.status, `${extra} -m ${m}`).toBe(1);
        expect(r.stderr).toMatch(/Input\/output error|errno 5/);
      }
      expect(run("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, t.path("q.raw")]).status).toBe(1);
    }
    const named = t.path("names.sock");
    await serve(
      "nbdkit",
      [
        "-f",
        "-U",
        named,
        "--filter=exportname",
        "memory",
        "1M",
        "exportname=one",
        "exportname=two",
        "exportname-list=explicit",
        "exportname-strict=true",
        "exportdesc=fixed:a disk",
      ],
      () => existsSync(named),
    );
    const list = await listNbdExports(`nbd+unix:///?socket=${named}`);
    expect(list).toEqual([
      { name: "one", description: "a disk" },
      { name: "two", description: "a disk" },
    ]);
    // The CLI, against nbdinfo's own listing of the same server.
    const cli = qimg(["list-exports", "--output=json", `nbd+unix:///?socket=${named}`]);
    expect(cli.status, cli.stderr).toBe(0);
    if (hasPeer("nbdinfo")) {
      const ref = JSON.parse(runOk("nbdinfo", ["--list", "--json", `nbd+unix:///?socket=${named}`])) as {
        exports: { "export-name": string; description?: string }[];
      };
      expect(JSON.parse(cli.stdout)).toEqual(
        ref.exports.map((e) => ({ name: e["export-name"], description: e.description ?? "" })),
      );
    }
    expect(qimg(["list-exports", `nbd+unix:///?socket=${named}`]).stdout).toBe("one\ta disk\ntwo\ta disk\n");
    const miss = qimg(["info", "-f", "raw", `nbd+unix:///three?socket=${named}`]);
    expect(miss.status).toBe(1);
    expect(miss.stderr).toContain("export 'three'");
  });

  it("convert -m N keeps N reads in flight on one connection", async () => {
    // Every read takes 250 ms on the server; 8 chunks of 4 MiB: one at a time needs ≥ 2 s of
    // reads, eight at a time about 0.25 s.
    const data = t.path("slow-src.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", data, "32M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 3 0 32M", data]);
    const sock = t.path("slow.sock");
    await serve("nbdkit", ["-f", "-U", sock, "--filter=delay", "file", data, "rdelay=250ms"], () =>
      existsSync(sock),
    );
    const time = (m: string) => {
      const out = t.path(`slow-${m}.raw`);
      const t0 = Date.now();
      const r = qimg(["convert", "-m", m, "-f", "raw", "-O", "raw", `nbd+unix:///?socket=${sock}`, out]);
      expect(r.status, r.stderr).toBe(0);
      expect(sha256(readFileSync(out))).toBe(sha256(readFileSync(data)));
      return Date.now() - t0;
    };
    const one = time("1");
    const eight = time("8");
    expect(one - eight, `-m 1: ${one} ms, -m 8: ${eight} ms`).toBeGreaterThan(800);
  });
});
