/**
 * The qimg CLI against qemu-img on the same files: `info`, `check`, `map` JSON agree field by
 * field; exit codes match (check 0/2/3/63, compare 0/1/2); convert round-trips; -o help; errors.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

function qemuMade(name: string, opts = ""): string {
  const f = t.path(name);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", ...(opts ? ["-o", opts] : []), f, "16M"]);
  runOk("qemu-io", [
    "-f",
    "qcow2",
    "-c",
    "write -P 0x61 0 1M",
    "-c",
    "write -z 2M 128k",
    "-c",
    "write -P 0x62 5M 300k",
    f,
  ]);
  return f;
}

describe.skipIf(!have)("qimg CLI vs qemu-img", () => {
  it("info --output=json agrees on every field", () => {
    const f = qemuMade("info.qcow2", "cluster_size=4k,lazy_refcounts=on");
    const q = JSON.parse(runOk("qemu-img", ["info", "--output=json", f]));
    const r = qimg(["info", "--output=json", f]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(q);
  });

  it("info human output matches qemu-img's lines", () => {
    const f = qemuMade("human.qcow2");
    const q = runOk("qemu-img", ["info", f]);
    const r = qimg(["info", f]);
    expect(r.stdout).toBe(q);
  });

  it("info --backing-chain and map through a chain agree with qemu-img", () => {
    const base = t.path("chain-base.qcow2");
    const top = t.path("chain-top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, "16M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 3M", "-c", "write -P 3 9M 64k", base]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "chain-base.qcow2", "-F", "qcow2", top]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 2 1M 512k", "-c", "write -z 2M 64k", top]);
    const r = qimg(["info", "--backing-chain", "--output=json", top]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(
      JSON.parse(runOk("qemu-img", ["info", "--backing-chain", "--output=json", top])),
    );
    expect(qimg(["info", "--backing-chain", top]).stdout).toBe(
      runOk("qemu-img", ["info", "--backing-chain", top]),
    );
    expect(qimg(["map", "--output=json", top]).stdout).toBe(runOk("qemu-img", ["map", "--output=json", top]));
    expect(qimg(["map", top]).stdout).toBe(runOk("qemu-img", ["map", top]));
  });

  it("map --output=json is identical", () => {
    const f = qemuMade("map.qcow2");
    expect(qimg(["map", "--output=json", f]).stdout).toBe(runOk("qemu-img", ["map", "--output=json", f]));
    expect(qimg(["map", f]).stdout).toBe(runOk("qemu-img", ["map", f]));
  });

  it("check JSON and exit codes match on clean and leaky images, and -r leaks repairs", () => {
    const f = qemuMade("check.qcow2");
    const q = run("qemu-img", ["check", "--output=json", f]);
    const m = qimg(["check", "--output=json", f]);
    expect(m.status).toBe(q.status);
    expect(JSON.parse(m.stdout)).toEqual(JSON.parse(q.stdout));
    // Leak a cluster: bump the refcount of cluster 0 in the first refcount block.
    const buf = readFileSync(f);
    const rt = Number(buf.readBigUInt64BE(48));
    const rb = Number(buf.readBigUInt64BE(rt));
    buf.writeUInt16BE(2, rb);
    writeFileSync(f, buf);
    const q2 = run("qemu-img", ["check", "--output=json", f]);
    const m2 = qimg(["check", "--output=json", f]);
    expect(q2.status).toBe(3);
    expect(m2.status).toBe(3);
    expect(JSON.parse(m2.stdout)).toEqual(JSON.parse(q2.stdout));
    const fix = qimg(["check", "-r", "leaks", f]);
    expect(fix.status).toBe(0);
    expect(fix.stdout).toContain("1 leaked clusters");
    expect(run("qemu-img", ["check", f]).status).toBe(0);
  });

  it("check exits 63 for raw, compare exits 0/1/2", () => {
    const raw = t.path("c.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", raw, "1M"]);
    expect(qimg(["check", "-f", "raw", raw]).status).toBe(63);
    expect(run("qemu-img", ["check", "-f", "raw", raw]).status).toBe(63);
    const a = qemuMade("cmp.qcow2");
    const b = t.path("cmp.raw");
    expect(qimg(["convert", "-f", "qcow2", "-O", "raw", a, b]).status).toBe(0);
    const same = qimg(["compare", "-f", "qcow2", "-F", "raw", a, b]);
    expect([same.status, same.stdout]).toEqual([0, "Images are identical.\n"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x7 4096 1", b]);
    const diff = qimg(["compare", "-f", "qcow2", "-F", "raw", a, b]);
    expect([diff.status, diff.stdout]).toEqual([1, "Content mismatch at offset 4096!\n"]);
    expect(run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", a, b]).stdout).toBe(diff.stdout);
    expect(qimg(["compare", a, t.path("missing")]).status).toBe(2);
  });

  it("convert raw→qcow2→raw keeps contents, sparseness and passes check", () => {
    const src = t.path("src.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", src, "32M"]);
    runOk("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0x41 1M 2M",
      "-c",
      "write -P 0x00 8M 1M",
      "-c",
      "write -P 0x42 20M 64k",
      src,
    ]);
    const q = t.path("dst.qcow2");
    const r = qimg(["convert", "-p", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=64k", src, q]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("(100.00/100%)");
    expect(run("qemu-img", ["check", q]).status).toBe(0);
    expect(run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", src, q]).status).toBe(0);
    const info = JSON.parse(runOk("qemu-img", ["info", "--output=json", q]));
    // 2 MiB + 64 KiB of data and the metadata; the written zeros are not allocated.
    expect(info["actual-size"]).toBeLessThan(3 << 20);
    const back = t.path("back.raw");
    expect(qimg(["convert", "-m", "4", "-W", "-O", "raw", q, back]).status).toBe(0);
    expect(run("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, back]).status).toBe(0);
    const n = t.path("existing.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", n, "32M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x99 0 32M", n]);
    expect(qimg(["convert", "-n", "-O", "raw", q, n]).status).toBe(0);
    expect(run("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, n]).status).toBe(0);
  });

  it("convert -B writes only the source's top layer over the new backing file, as qemu-img", () => {
    const base = t.path("B-base.qcow2");
    const top = t.path("B-top.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, "8M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 8M", base]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 2 1M 1M", "-c", "write -z 4M 64k", top]);
    const ours = t.path("B-ours.qcow2");
    const theirs = t.path("B-theirs.qcow2");
    expect(qimg(["convert", "-O", "qcow2", "-B", base, "-F", "qcow2", top, ours]).status).toBe(0);
    runOk("qemu-img", ["convert", "-O", "qcow2", "-B", base, "-F", "qcow2", top, theirs]);
    expect(run("qemu-img", ["compare", top, ours]).status).toBe(0);
    expect(run("qemu-img", ["check", ours]).status).toBe(0);
    const shape = (f: string) =>
      JSON.parse(runOk("qemu-img", ["map", "--output=json", f])).map((e: Record<string, unknown>) => ({
        ...e,
        offset: undefined,
      }));
    expect(shape(ours)).toEqual(shape(theirs));
  });

  it("create -o help lists the format's options; bad input gives qemu-img's errors", () => {
    const h = qimg(["create", "-f", "qcow2", "-o", "help"]);
    expect(h.status).toBe(0);
    expect(h.stdout).toContain("Supported qcow2 options:");
    expect(h.stdout).toContain("  cluster_size=<size>    - qcow2 cluster size");
    const bad = qimg(["create", "-f", "qcow2", "-o", "cluster_size=3000", t.path("bad.qcow2"), "1M"]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("Cluster size must be a power of two between 512 and 2048k");
    const zero = qimg(["convert", "--target-is-zero", "-O", "raw", "a", "b"]);
    expect([zero.status, zero.stderr]).toEqual([1, "qimg: --target-is-zero requires use of -n flag\n"]);
    const nb = qimg(["create", "-f", "qcow2", "-b", t.path("c.raw"), t.path("nb.qcow2")]);
    expect(nb.status).toBe(1);
    expect(nb.stderr).toContain("Backing file specified without backing format");
    const probe = qimg(["convert", "-O", "raw", t.path("c.raw"), t.path("c2.raw")]);
    expect(probe.status).toBe(0);
  });
});
