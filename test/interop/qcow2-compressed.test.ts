/**
 * Compressed qcow2 clusters (zlib and zstd) written by qemu-img read back identically in qimg;
 * `map` and `check` agree with qemu-img; writes, zeroes and discards over compressed clusters
 * leave an image qemu-img checks clean and compares equal to the expected contents.
 */
import { writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemuCheck, qemuDecode, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

function compressed(name: string, type: "zlib" | "zstd", cluster: string): string {
  const src = t.path(`${name}.src.qcow2`);
  runOk("qemu-img", ["create", "-q", "-f", "qcow2", src, "6M"]);
  runOk("qemu-io", [
    "-f",
    "qcow2",
    "-c",
    "write -P 0x41 0 1M",
    "-c",
    "write -P 0x42 1536k 100k",
    "-c",
    "write -z 3M 64k",
    "-c",
    "write -P 0x43 5M 1M",
    src,
  ]);
  const dst = t.path(`${name}.qcow2`);
  runOk("qemu-img", [
    "convert",
    "-c",
    "-O",
    "qcow2",
    "-o",
    `compression_type=${type},cluster_size=${cluster}`,
    src,
    dst,
  ]);
  return dst;
}

describe.skipIf(!have)("compressed qcow2 clusters", () => {
  for (const type of ["zlib", "zstd"] as const) {
    for (const cluster of ["4k", "64k", "2M"]) {
      it(`${type}, cluster_size=${cluster}: reads, map and check agree with qemu-img`, async () => {
        const f = compressed(`${type}-${cluster}`, type, cluster);
        const img = await open(f, { readOnly: true });
        const ours = await img.read(0, img.virtualSize);
        await img.close();
        expect(sha256(ours)).toBe(sha256(qemuDecode(f, "qcow2", `${f}.raw`)));
        expect(qimg(["map", "--output=json", f]).stdout).toBe(runOk("qemu-img", ["map", "--output=json", f]));
        const q = run("qemu-img", ["check", "--output=json", f]);
        const m = qimg(["check", "--output=json", f]);
        expect(JSON.parse(m.stdout)).toEqual(JSON.parse(q.stdout));
        expect(JSON.parse(qimg(["info", "--output=json", f]).stdout)).toEqual(
          JSON.parse(runOk("qemu-img", ["info", "--output=json", f])),
        );
      });
    }

    it(`${type}: writes, zeroes and discards over compressed clusters stay consistent`, async () => {
      const f = compressed(`${type}-w`, type, "64k");
      const model = qemuDecode(f, "qcow2", `${f}.before.raw`);
      const img = await open(f);
      await img.write(10_000, Buffer.alloc(5000, 0x51)); // partial: read-modify-write of a compressed cluster
      model.fill(0x51, 10_000, 15_000);
      await img.write(5 << 20, Buffer.alloc(128 << 10, 0x52)); // whole clusters replaced
      model.fill(0x52, 5 << 20, (5 << 20) + (128 << 10));
      await img.writeZeroes(256 << 10, 128 << 10, { mayUnmap: true });
      model.fill(0, 256 << 10, 384 << 10);
      await img.discard(512 << 10, 64 << 10);
      model.fill(0, 512 << 10, 576 << 10);
      expect((await img.read(0, img.virtualSize)).equals(model)).toBe(true);
      await img.close();
      const c = qemuCheck(f);
      expect(c.json).not.toHaveProperty("leaks");
      expect(c.json).not.toHaveProperty("corruptions");
      expect(c.status).toBe(0);
      const raw = `${f}.expected.raw`;
      writeFileSync(raw, model);
      expect(run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", f, raw]).status).toBe(0);
    });
  }

  for (const type of ["zlib", "zstd"] as const) {
    it(`convert -c -o compression_type=${type}: QEMU reads what qimg compressed`, () => {
      const src = t.path(`c-${type}.raw`);
      runOk("qemu-img", ["create", "-q", "-f", "raw", src, "9000k"]);
      runOk("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0x61 0 3M",
        "-c",
        "write -P 0x62 5M 1M",
        "-c",
        "write -P 0 6M 64k",
        src,
      ]);
      const dst = t.path(`c-${type}.qcow2`);
      const r = qimg([
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        `compression_type=${type},cluster_size=64k`,
        src,
        dst,
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(run("qemu-img", ["check", dst]).status).toBe(0);
      expect(run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", src, dst]).status).toBe(0);
      const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", dst]));
      expect(map.some((e: { compressed: boolean }) => e.compressed)).toBe(true);
      const info = JSON.parse(runOk("qemu-img", ["info", "--output=json", dst]));
      expect(info["format-specific"].data["compression-type"]).toBe(type);
      // 4 MiB of patterns compress to a small fraction.
      expect(info["actual-size"]).toBeLessThan(1 << 20);
    });
  }

  it("--compress-threads and --compress-level: same contents at every setting; bad levels refused", () => {
    const src = t.path("lvl.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", src, "4M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x33 0 1M", "-c", "write -P 0x34 2M 1M", src]);
    const sizes: number[] = [];
    for (const [type, threads, level] of [
      ["zlib", "1", "1"],
      ["zlib", "3", "9"],
      ["zstd", "2", "1"],
      ["zstd", "4", "19"],
    ]) {
      const dst = t.path(`lvl-${type}-${threads}-${level}.qcow2`);
      const args = ["convert", "-c", "--compress-threads", threads, "--compress-level", level];
      const r = qimg([...args, "-O", "qcow2", "-o", `compression_type=${type}`, src, dst]);
      expect(r.status, r.stderr).toBe(0);
      expect(run("qemu-img", ["check", dst]).status).toBe(0);
      expect(run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", src, dst]).status).toBe(0);
      sizes.push(JSON.parse(runOk("qemu-img", ["info", "--output=json", dst]))["actual-size"]);
    }
    expect(sizes.every((s) => s < 1 << 20)).toBe(true);
    const bad = qimg(["convert", "-c", "--compress-level", "12", "-O", "qcow2", src, t.path("bad.qcow2")]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("Compression level 12 is out of range for zlib (1..9)");
    const noC = qimg(["convert", "--compress-threads", "2", "-O", "qcow2", src, t.path("noc.qcow2")]);
    expect(noC.status).toBe(1);
    expect(noC.stderr).toContain("require -c");
  });

  it("a corrupt compressed stream is a typed error, not garbage", async () => {
    const f = compressed("bad", "zlib", "64k");
    const map = JSON.parse(runOk("qemu-img", ["map", "--output=json", f]));
    expect(map[0].compressed).toBe(true);
    // Overwrite the data area after the metadata with garbage.
    const fs = await import("node:fs");
    const fd = fs.openSync(f, "r+");
    fs.writeSync(fd, Buffer.alloc(8192, 0xff), 0, 8192, 0x50000);
    fs.closeSync(fd);
    const img = await open(f, { readOnly: true });
    await expect(img.read(0, 1 << 20)).rejects.toMatchObject({ code: "ERR_QIMG_CORRUPT" });
    await img.close();
  });
});
