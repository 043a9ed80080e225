/**
 * `qimg rebase` and `qimg commit` against qemu-img on the same three-layer chains: the guest
 * contents stay what qemu-img reads (and what qemu-img's own rebase/commit produce on a copy),
 * every image written passes `qemu-img check`, and the stored backing fields are the ones
 * qemu-img reports. Error cases exit 1 with qemu-img's messages.
 */
import { copyFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qemuCheck, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

/** base ← mid ← top with overlapping patterns, zero clusters and a larger top; returns paths. */
function chain(name: string, topSize = "4M"): { base: string; mid: string; top: string; expect: string } {
  const base = t.path(`${name}-base.qcow2`);
  const mid = t.path(`${name}-mid.qcow2`);
  const top = t.path(`${name}-top.qcow2`);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, "4M"]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 2M 512k", base]);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", mid]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 3 512k 1M", "-c", "write -z 2M 64k", mid]);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top, topSize]);
  runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 4 3M 100k", "-c", "write -P 5 100k 7k", top]);
  const expect = t.path(`${name}-expect.raw`);
  runOk("qemu-img", ["convert", "-O", "raw", top, expect]);
  return { base, mid, top, expect };
}

const same = (a: string, b: string, fa = "qcow2", fb = "raw") =>
  run("qemu-img", ["compare", "-f", fa, "-F", fb, a, b]).status;
const info = (f: string) => JSON.parse(runOk("qemu-img", ["info", "--output=json", f]));
const clean = (f: string) => {
  const c = qemuCheck(f);
  expect(c.status, JSON.stringify(c.json)).toBe(0);
};

describe.skipIf(!have)("rebase", () => {
  it("safe rebase onto a deeper base keeps the contents, like qemu-img's", () => {
    const c = chain("deep");
    const theirs = t.path("deep-theirs.qcow2");
    copyFileSync(c.top, theirs);
    runOk("qemu-img", ["rebase", "-b", c.base, "-F", "qcow2", theirs]);
    const r = qimg(["rebase", "-b", c.base, "-F", "qcow2", c.top]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("");
    clean(c.top);
    expect(same(c.top, c.expect)).toBe(0);
    expect(same(c.top, theirs, "qcow2", "qcow2")).toBe(0);
    const [ours, qemu] = [info(c.top), info(theirs)];
    for (const k of ["backing-filename", "backing-filename-format", "full-backing-filename"]) {
      expect(ours[k]).toBe(qemu[k]);
    }
  });

  it('-b "" makes the image standalone; -c writes the copied clusters compressed', () => {
    const c = chain("flat");
    const r = qimg(["rebase", "-c", "-b", "", c.top]);
    expect(r.status, r.stderr).toBe(0);
    clean(c.top);
    expect(same(c.top, c.expect)).toBe(0);
    expect(info(c.top)).not.toHaveProperty("backing-filename");
    const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", c.top]));
    expect(map.some((e: { compressed: boolean }) => e.compressed)).toBe(true);
    expect(map.every((e: { depth: number }) => e.depth === 0)).toBe(true);
  });

  it("rebase onto an unrelated image copies exactly what differs", () => {
    const c = chain("other");
    const other = t.path("other-new.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", other, "4M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 9 0 4M", "-c", "write -P 3 512k 1M", other]);
    const r = qimg(["rebase", "-b", other, "-F", "qcow2", c.top]);
    expect(r.status, r.stderr).toBe(0);
    clean(c.top);
    expect(same(c.top, c.expect)).toBe(0);
    // The 1 MiB that both chains read as pattern 3 was not copied into the image.
    const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", c.top]));
    const fromOther = map.filter((e: { depth: number }) => e.depth === 1);
    expect(fromOther).toEqual([expect.objectContaining({ start: 524288, length: 1 << 20 })]);
  });

  it("-u only rewrites the reference, as qemu-img -u does", () => {
    const c = chain("unsafe");
    const theirs = t.path("unsafe-theirs.qcow2");
    copyFileSync(c.top, theirs);
    runOk("qemu-img", ["rebase", "-u", "-b", c.base, "-F", "qcow2", theirs]);
    const r = qimg(["rebase", "-u", "-b", c.base, "-F", "qcow2", c.top]);
    expect(r.status, r.stderr).toBe(0);
    clean(c.top);
    expect(same(c.top, theirs, "qcow2", "qcow2")).toBe(0);
    expect(info(c.top)["backing-filename"]).toBe(c.base);
    // -u without -b removes the reference; the image keeps only its own clusters.
    expect(qimg(["rebase", "-u", c.top]).status).toBe(0);
    expect(info(c.top)).not.toHaveProperty("backing-filename");
    clean(c.top);
  });

  it("errors: no -F, a missing new backing file, no -b without -u", () => {
    const c = chain("err");
    const before = runOk("sha256sum", [c.top]);
    const noF = qimg(["rebase", "-b", c.base, c.top]);
    expect(noF.status).toBe(1);
    expect(noF.stderr).toContain(
      `Could not change the backing file to '${c.base}': backing format must be specified`,
    );
    const missing = qimg(["rebase", "-b", "nonexistent.qcow2", "-F", "qcow2", c.top]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("Could not open new backing file 'nonexistent.qcow2'");
    const noB = qimg(["rebase", c.top]);
    expect(noB.status).toBe(1);
    expect(noB.stderr).toContain("Must specify backing file (-b) or use unsafe mode (-u)");
    expect(runOk("sha256sum", [c.top])).toBe(before);
  });
});

describe.skipIf(!have)("commit", () => {
  it("commits into the backing file and empties the image, like qemu-img", () => {
    const c = chain("commit");
    const q = chain("commit-q");
    runOk("qemu-img", ["commit", q.top]);
    const r = qimg(["commit", c.top]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("Image committed.\n");
    for (const f of [c.top, c.mid, c.base]) clean(f);
    expect(same(c.top, c.expect)).toBe(0);
    expect(same(c.mid, q.mid, "qcow2", "qcow2")).toBe(0);
    const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", c.top]));
    expect(map.some((e: { depth: number }) => e.depth === 0)).toBe(false);
  });

  it("-d keeps the image; -b commits deeper and implies -d; a larger top grows the base", () => {
    const c = chain("deep-commit", "6M");
    const before = JSON.parse(runOk("qemu-img", ["map", "--output=json", c.top]));
    const r = qimg(["commit", "-q", "-b", c.base, c.top]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("");
    clean(c.base);
    expect(same(c.base, c.expect)).toBe(0);
    expect(info(c.base)["virtual-size"]).toBe(6 << 20);
    expect(JSON.parse(runOk("qemu-img", ["map", "--output=json", c.top]))).toEqual(before);
    const d = chain("drop");
    expect(qimg(["commit", "-d", d.top]).status).toBe(0);
    clean(d.mid);
    expect(same(d.top, d.expect)).toBe(0);
    const m = JSON.parse(runOk("qemu-img", ["map", "--output=json", d.top]));
    expect(m.some((e: { depth: number; data: boolean }) => e.depth === 0 && e.data)).toBe(true);
  });

  it("errors: no backing file, a base not in the chain, a bad rate", () => {
    const c = chain("commit-err");
    const noBacking = qimg(["commit", c.base]);
    expect(noBacking.status).toBe(1);
    expect(noBacking.stderr).toContain("Image does not have a backing file");
    const notFound = qimg(["commit", "-b", "nope.qcow2", c.top]);
    expect(notFound.status).toBe(1);
    expect(notFound.stderr).toContain(`Did not find 'nope.qcow2' in the backing chain of '${c.top}'`);
    const rate = qimg(["commit", "-r", "1x", c.top]);
    expect(rate.status).toBe(1);
    expect(rate.stderr).toContain("Invalid rate limit specified: '1x'.");
  });
});
