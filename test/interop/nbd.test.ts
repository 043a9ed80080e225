/**
 * The NBD client through the CLI against qemu-nbd: `info`, `map` and `convert` of `nbd+unix://`,
 * `nbd://` (TCP), legacy `nbd:unix:…` and `--image-opts file.driver=nbd,…` addresses equal
 * qemu-img's on the same export; `convert -n` writes into an export; a missing export fails.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { parseNbdOptions, parseNbdString } from "../../ts/graph/nbd.js";
import { hasPeer, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-nbd") && hasPeer("qemu-io");
const t = tempDir();
const servers: ChildProcess[] = [];
afterAll(() => {
  for (const s of servers) s.kill();
  t.cleanup();
});

async function serve(args: string[], ready: () => boolean): Promise<ChildProcess> {
  const p = spawn("qemu-nbd", ["--persistent", "--shared=8", ...args], { stdio: "ignore" });
  servers.push(p);
  const t0 = Date.now();
  while (!ready()) {
    if (Date.now() - t0 > 10_000) throw new Error("qemu-nbd did not start");
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}

describe("NBD address parsing", () => {
  it("takes every form QEMU takes", () => {
    expect(parseNbdString("nbd://h:1234/exp")).toEqual({
      serverType: "inet",
      host: "h",
      port: 1234,
      export: "exp",
    });
    expect(parseNbdString("nbd+tcp://[::1]/")).toEqual({
      serverType: "inet",
      host: "::1",
      port: undefined,
      export: "",
    });
    expect(parseNbdString("nbd+unix:///e?socket=/s.sock")).toEqual({
      serverType: "unix",
      path: "/s.sock",
      export: "e",
    });
    expect(parseNbdString("nbd:localhost:10809:exportname=x")).toEqual({
      serverType: "inet",
      host: "localhost",
      port: 10809,
      export: "x",
    });
    expect(parseNbdString("nbd:unix:/a/b.sock")).toEqual({
      serverType: "unix",
      path: "/a/b.sock",
      export: "",
    });
    expect(parseNbdOptions({ server: { type: "inet", host: "h", port: "99" }, export: "e" })).toEqual({
      serverType: "inet",
      host: "h",
      port: 99,
      export: "e",
    });
    for (const bad of ["nbd+unix:///e", "nbd+unix://h/e?socket=/s", "nbd://h:99999/", "nbd:onlyhost"]) {
      expect(() => parseNbdString(bad), bad).toThrow(/Invalid NBD address/);
    }
  });
});

describe.skipIf(!have)("NBD client against qemu-nbd", () => {
  it("info, map and convert equal qemu-img's for every address form", async () => {
    const img = t.path("e.qcow2");
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
    const sock = t.path("e.sock");
    await serve(["-r", "-k", sock, "-f", "qcow2", "-x", "ex", img], () => existsSync(sock));
    const port = 20000 + (process.pid % 20000);
    await serve(["-r", "-b", "127.0.0.1", "-p", String(port), "-f", "qcow2", "-x", "ex", img], () => {
      return run("qemu-img", ["info", `nbd://127.0.0.1:${port}/ex`]).status === 0;
    });
    const unixUri = `nbd+unix:///ex?socket=${sock}`;
    for (const cmd of [["info"], ["info", "--output=json"], ["map", "--output=json"]]) {
      expect(qimg([...cmd, unixUri]).stdout, cmd.join(" ")).toBe(runOk("qemu-img", [...cmd, unixUri]));
    }
    const want = t.path("want.raw");
    runOk("qemu-img", ["convert", "-O", "raw", unixUri, want]);
    const forms = [
      unixUri,
      `nbd://127.0.0.1:${port}/ex`,
      `nbd:unix:${sock}:exportname=ex`,
      `nbd:127.0.0.1:${port}:exportname=ex`,
    ];
    for (const [k, f] of forms.entries()) {
      const out = t.path(`got${k}.raw`);
      const r = qimg(["convert", "-O", "raw", f, out]);
      expect(r.status, `${f}: ${r.stderr}`).toBe(0);
      expect(sha256(readFileSync(out)), f).toBe(sha256(readFileSync(want)));
    }
    const opts = `driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=${sock},file.export=ex`;
    const o = t.path("opts.raw");
    expect(qimg(["convert", "--image-opts", "-O", "raw", opts, o]).status).toBe(0);
    expect(sha256(readFileSync(o))).toBe(sha256(readFileSync(want)));
    const missing = qimg(["info", `nbd+unix:///nope?socket=${sock}`]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("export 'nope'");
  });

  it("convert -n writes into an export", async () => {
    const target = t.path("target.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", target, "4M"]);
    const src = t.path("src.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", src, "4M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 9 100k 2M", src]);
    const sock = t.path("w.sock");
    const p = await serve(["-k", sock, "-f", "raw", "-x", "w", target], () => existsSync(sock));
    const r = qimg(["convert", "-n", "-f", "raw", "-O", "raw", src, `nbd+unix:///w?socket=${sock}`]);
    expect(r.status, r.stderr).toBe(0);
    p.kill();
    await new Promise((res) => p.once("exit", res));
    expect(run("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, target]).status).toBe(0);
  });
});
