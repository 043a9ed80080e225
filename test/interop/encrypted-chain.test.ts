/**
 * Encrypted backing chains: each encrypted layer needs its own secret, given as QEMU takes it —
 * `backing.encrypt.key-secret=ID` (options for the backing file the header names, no filename).
 * A chain made by qemu-img (qcow2 + LUKS over qcow2 + LUKS) reads, converts and commits in qimg
 * as in qemu-img; without the backing secret both refuse.
 */
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir("qimg-enc-chain-");
afterAll(() => t.cleanup());
const OBJ = ["--object", "secret,id=s0,data=pw0", "--object", "secret,id=s1,data=pw1"];
const ENC = (id: string) => `encrypt.format=luks,encrypt.key-secret=${id},encrypt.iter-time=10`;

/** base (secret s0, 0x11 in the first 128 KiB) ← top (secret s1, 0x22 at 64 KiB..192 KiB). */
function chain(name: string): { base: string; top: string; opts: string } {
  const base = t.path(`${name}-base.qcow2`);
  const top = t.path(`${name}-top.qcow2`);
  // qemu-img create with LUKS may fail at random on CPU accounting (oracles.md): retry.
  const create = (args: string[]) => {
    for (let i = 0; ; i++) {
      const r = run("qemu-img", ["create", "-q", ...OBJ, "-f", "qcow2", ...args]);
      if (r.status === 0) return;
      if (i > 5) throw new Error(r.stderr);
    }
  };
  create(["-o", ENC("s0"), base, "1M"]);
  create(["-o", `${ENC("s1")},backing_file=${base},backing_fmt=qcow2`, top]);
  runOk("qemu-io", [
    ...OBJ,
    "--image-opts",
    "-c",
    "write -P 0x11 0 128k",
    `driver=qcow2,file.filename=${base},encrypt.key-secret=s0`,
  ]);
  const opts = `driver=qcow2,file.filename=${top},encrypt.key-secret=s1,backing.encrypt.key-secret=s0`;
  runOk("qemu-io", [...OBJ, "--image-opts", "-c", "write -P 0x22 64k 128k", opts]);
  return { base, top, opts };
}

function expected(): Buffer {
  const b = Buffer.alloc(1 << 20);
  b.fill(0x11, 0, 128 << 10);
  b.fill(0x22, 64 << 10, 192 << 10);
  return b;
}

describe.skipIf(!have)("encrypted backing chains (backing.encrypt.key-secret)", () => {
  it("convert reads the chain as qemu-img does; without the backing secret both refuse", () => {
    const { opts } = chain("conv");
    const out = t.path("conv.raw");
    const r = qimg(["convert", ...OBJ, "--image-opts", opts, "-O", "raw", out]);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(out).equals(expected())).toBe(true);
    const ref = t.path("conv-ref.raw");
    runOk("qemu-img", ["convert", ...OBJ, "--image-opts", opts, "-O", "raw", ref]);
    expect(readFileSync(ref).equals(readFileSync(out))).toBe(true);
    const noBacking = opts.replace(",backing.encrypt.key-secret=s0", "");
    const q = run("qemu-img", ["convert", ...OBJ, "--image-opts", noBacking, "-O", "raw", t.path("x.raw")]);
    const m = qimg(["convert", ...OBJ, "--image-opts", noBacking, "-O", "raw", t.path("y.raw")]);
    expect(q.status).not.toBe(0);
    expect(m.status).toBe(1);
    expect(m.stderr).toContain("key-secret");
  });

  it("commit writes the top's data into the encrypted base, which qemu-img reads and checks", () => {
    const { base, opts } = chain("commit");
    const r = qimg(["commit", ...OBJ, "--image-opts", opts]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("Image committed.");
    const baseOpts = `driver=qcow2,file.filename=${base},encrypt.key-secret=s0`;
    const c = run("qemu-img", ["check", ...OBJ, "--image-opts", baseOpts]);
    expect(c.status, c.stdout + c.stderr).toBe(0);
    const out = t.path("commit-base.raw");
    runOk("qemu-img", ["convert", ...OBJ, "--image-opts", baseOpts, "-O", "raw", out]);
    expect(readFileSync(out).equals(expected())).toBe(true);
  });
});
