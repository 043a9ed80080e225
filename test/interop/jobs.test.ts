/**
 * Library jobs: progress events, cancellation through an AbortSignal (the job rejects with
 * ERR_QIMG_ABORTED and the partial target still passes `qemu-img check`), the typed errors of
 * `open()`, and the implicit-open gate for backing files.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { convert, create, info, open } from "../../ts/index.js";
import { hasPeer, qemuCheck, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

describe.skipIf(!have)("jobs", () => {
  it("convert reports progress up to the total and resolves after the flush", async () => {
    const src = t.path("p.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", src, "24M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x3c 0 24M", src]);
    const seen: number[] = [];
    const job = convert(src, t.path("p.qcow2"), {
      sourceFormat: "raw",
      targetFormat: "qcow2",
      chunkSize: 1 << 20,
    });
    job.on("progress", ({ done, total }) => {
      expect(total).toBe(24 << 20);
      seen.push(done);
    });
    const r = await job;
    expect(r.totalBytes).toBe(24 << 20);
    expect(r.bytesWritten).toBe(24 << 20);
    expect(seen[seen.length - 1]).toBe(24 << 20);
    expect(seen.every((v, i) => i === 0 || v >= seen[i - 1])).toBe(true);
    expect(qemuCheck(t.path("p.qcow2")).status).toBe(0);
  });

  it("convert concatenates several sources like qemu-img", async () => {
    const a = t.path("cat-a.raw");
    const b = t.path("cat-b.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "raw", a, "3000000"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x11 0 2999808", a]);
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", b, "5M"]);
    runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 1M 1M", b]);
    const ours = t.path("cat.qcow2");
    await convert([{ driver: "raw", file: a }, b, { driver: "raw", file: a }], ours, {
      targetFormat: "qcow2",
    });
    const ref = t.path("cat-ref.raw");
    runOk("qemu-img", [
      "convert",
      "-O",
      "raw",
      "--image-opts",
      `driver=raw,file.filename=${a}`,
      `driver=qcow2,file.filename=${b}`,
      `driver=raw,file.filename=${a}`,
      ref,
    ]);
    expect(qemuCheck(ours).status).toBe(0);
    expect(runOk("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", ours, ref])).toContain("identical");
  });

  it("an aborted convert rejects with ERR_QIMG_ABORTED and leaves a consistent target", async () => {
    const src = t.path("a.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", src, "256M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 0 256M", src]);
    const ac = new AbortController();
    const dst = t.path("a.qcow2");
    const job = convert(src, dst, {
      sourceFormat: "raw",
      targetFormat: "qcow2",
      signal: ac.signal,
      chunkSize: 1 << 20,
      parallel: 2,
    });
    let doneAtAbort = 0;
    job.on("progress", ({ done }) => {
      if (done >= 8 << 20 && !ac.signal.aborted) {
        doneAtAbort = done;
        ac.abort();
      }
    });
    await expect(job).rejects.toMatchObject({ code: "ERR_QIMG_ABORTED" });
    expect(doneAtAbort).toBeGreaterThan(0);
    const c = qemuCheck(dst);
    expect(c.status).toBe(0);
    // It stopped early: far less than the whole source was copied.
    const [i] = await info(dst);
    expect(i["actual-size"]).toBeLessThan(128 << 20);
  });

  it("lazy refcounts: the dirty bit survives a crash and a writable open rebuilds the refcounts", async () => {
    const f = t.path("lazy.qcow2");
    await create(f, { format: "qcow2", size: 8 << 20, options: { lazy_refcounts: "on" } });
    // A child writes, flushes and dies without closing: the dirty bit stays set.
    // (The child uses the built library: Node 20 cannot import TypeScript.)
    const built = new URL("../../dist/index.js", import.meta.url).pathname;
    const script = `import { open } from ${JSON.stringify(built)};
      const img = await open(${JSON.stringify(f)}, { format: "qcow2" });
      await img.write(0, Buffer.alloc(3 << 20, 0x4d));
      await img.flush();
      process.exit(0);`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(runOk("qemu-img", ["info", "-U", "--output=json", f]))["dirty-flag"]).toBe(true);
    // Lose refcount updates, as a crash with lazy refcounts may: zero the first refcount block.
    const buf = readFileSync(f);
    const rb = Number(buf.readBigUInt64BE(Number(buf.readBigUInt64BE(48))));
    buf.fill(0, rb, rb + 65536);
    writeFileSync(f, buf);
    const img = await open(f, { format: "qcow2" });
    expect((await img.read(0, 3 << 20)).equals(Buffer.alloc(3 << 20, 0x4d))).toBe(true);
    await img.close();
    const c = qemuCheck(f);
    expect(c.json).not.toHaveProperty("corruptions");
    expect(c.json).not.toHaveProperty("leaks");
    expect(c.status).toBe(0);
    expect(JSON.parse(runOk("qemu-img", ["info", "--output=json", f]))["dirty-flag"]).toBe(false);
  });

  it("open() gives typed errors for missing files, wrong formats and closed handles", async () => {
    await expect(open(t.path("nope.qcow2"))).rejects.toMatchObject({ code: "ERR_QIMG_NOT_FOUND" });
    const raw = t.path("plain.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", raw, "1M"]);
    await expect(open(raw, { format: "qcow2", readOnly: true })).rejects.toMatchObject({
      code: "ERR_QIMG_WRONG_FORMAT",
    });
    // Probing never picks raw for a writable open; -f raw always works.
    await expect(open(raw)).rejects.toMatchObject({ code: "ERR_QIMG_INVALID_ARGUMENT" });
    const img = await open(raw, { format: "raw" });
    expect((await img.info())["virtual-size"]).toBe(1 << 20);
    expect((await img.info()).format).toBe("raw");
    await expect(img.read(1 << 20, 1)).rejects.toMatchObject({ code: "ERR_QIMG_OUT_OF_RANGE" });
    await img.close();
    await expect(img.read(0, 1)).rejects.toMatchObject({ code: "ERR_QIMG_INVALID_ARGUMENT" });
    await expect(open("iscsi://127.0.0.1/iqn.x/0")).rejects.toMatchObject({ code: "ERR_QIMG_UNSUPPORTED" });
    // A protocol qimg speaks, with nobody listening: an I/O error, not a hang.
    await expect(open("nbd://127.0.0.1:1/x", { format: "raw" })).rejects.toMatchObject({
      code: "ERR_QIMG_IO",
    });
  });

  it("the implicit-open gate follows plain backing paths, refuses json: names and everything when untrusted", async () => {
    const base = t.path("g-base.qcow2");
    await create(base, { format: "qcow2", size: 1 << 20 });
    const top = t.path("g-top.qcow2");
    await create(top, { format: "qcow2", backingFile: "g-base.qcow2", backingFormat: "qcow2" });
    const img = await open(top, { readOnly: true });
    expect(img.chainFilenames).toEqual([top, base]);
    await img.close();
    await expect(open(top, { readOnly: true, implicit: "none" })).rejects.toMatchObject({
      code: "ERR_QIMG_UNSUPPORTED",
    });
    const js = t.path("g-json.qcow2");
    runOk("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-u",
      "-b",
      `json:{"driver":"qcow2","file":{"driver":"file","filename":"${base}"}}`,
      "-F",
      "qcow2",
      js,
      "1M",
    ]);
    await expect(open(js, { readOnly: true })).rejects.toMatchObject({ code: "ERR_QIMG_UNSUPPORTED" });
    const ok = await open(js, { readOnly: true, implicit: "all" });
    expect(ok.chainFilenames.length).toBe(2);
    await ok.close();
    const [i] = await info(js);
    expect(i["backing-filename"]).toContain("json:");
  });
});
