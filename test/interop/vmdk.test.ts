/**
 * vmdk through the CLI and the library against qemu-img 10 and 7-Zip: create for every
 * subformat and option (`info` human and JSON, `map` and `check` equal to qemu-img's on the same
 * image), convert to streamOptimized (qemu-img compare, 7-Zip reads it), a parent chain, and the
 * implicit-open gate on extent names (absolute and `..` names refused unless policy `all`).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemu72, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir("qimg-vmdk-");
afterAll(() => t.cleanup());

const has7z = have && spawnSync("7zz", ["i"]).status === 0;
if (have && !has7z) console.warn("SKIP: 7zz is not installed (apt 7zip); its checks are skipped");

describe.skipIf(!have)("vmdk against qemu-img", () => {
  const creates: Array<[string, string]> = [
    ["subformat=monolithicSparse", "100M"],
    ["subformat=monolithicFlat", "10M"],
    ["subformat=twoGbMaxExtentSparse", "5G"],
    ["subformat=twoGbMaxExtentFlat", "3G"],
    ["subformat=streamOptimized", "1G"],
    ["zeroed_grain=on,adapter_type=lsilogic,toolsversion=7", "64M"],
    ["compat6=on,adapter_type=buslogic", "64M"],
    ["hwversion=10,adapter_type=legacyESX", "64M"],
  ];
  for (const [opts, size] of creates) {
    it(`create -o ${opts} ${size}: info, map and check equal qemu-img's`, () => {
      const dir = t.path(opts.replace(/[=,]/g, "_"));
      mkdirSync(dir);
      const ours = `${dir}/o.vmdk`;
      const r = qimg(["create", "-q", "-f", "vmdk", "-o", opts, ours, size]);
      expect(r.status, r.stderr).toBe(0);
      const qi = JSON.parse(runOk("qemu-img", ["info", "--output=json", "-f", "vmdk", ours]));
      expect(JSON.parse(qimg(["info", "--output=json", "-f", "vmdk", ours]).stdout)).toEqual(qi);
      expect(qimg(["info", "-f", "vmdk", ours]).stdout).toBe(runOk("qemu-img", ["info", "-f", "vmdk", ours]));
      expect(qimg(["map", "--output=json", "-f", "vmdk", ours]).stdout).toBe(
        runOk("qemu-img", ["map", "--output=json", "-f", "vmdk", ours]),
      );
      const qc = run("qemu-img", ["check", "-f", "vmdk", ours]);
      const oc = qimg(["check", "-f", "vmdk", ours]);
      expect([oc.status, oc.stdout]).toEqual([qc.status, qc.stdout]);
    });
  }

  it("compat6 with hwversion is refused with QEMU's message", () => {
    const r = qimg(["create", "-q", "-f", "vmdk", "-o", "compat6=on,hwversion=7", t.path("x.vmdk"), "1M"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("compat6 cannot be enabled with hwversion set");
  });

  it("convert raw → streamOptimized (and -c): qemu-img compare, 7-Zip reads it", () => {
    const src = t.path("src.raw");
    const b = Buffer.alloc(12 << 20);
    for (let i = 0; i < b.length; i += 4096) b.fill((i >> 12) & 0xff, i, i + 1000 + (i % 3000));
    b.fill(0, 4 << 20, 6 << 20);
    writeFileSync(src, b);
    for (const extra of [[], ["-c", "--compress-level", "1"]]) {
      const out = t.path(`s${extra.length}.vmdk`);
      const r = qimg([
        "convert",
        ...extra,
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        src,
        out,
      ]);
      expect(r.status, r.stderr).toBe(0);
      runOk("qemu-img", ["check", "-f", "vmdk", out]);
      runOk("qemu-img", ["compare", "-f", "raw", "-F", "vmdk", src, out]);
      if (has7z) {
        const z = spawnSync("7zz", ["e", "-so", "-tVMDK", out], { maxBuffer: 1 << 30 });
        expect(z.status).toBe(0);
        expect(Buffer.compare(z.stdout, b)).toBe(0);
      }
    }
    // And back: qemu-img's own streamOptimized (directory in place) reads in qimg.
    const q = t.path("q-stream.vmdk");
    runOk("qemu-img", ["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, q]);
    const back = t.path("back.raw");
    expect(qimg(["convert", "-f", "vmdk", "-O", "raw", q, back]).status).toBe(0);
    expect(Buffer.compare(readFileSync(back), b)).toBe(0);
  });

  it("qemu-img 7.2 checks and reads every subformat qimg converts to", () => {
    const q72 = qemu72("qemu-img");
    if (!q72) return;
    const src = t.path("src72.raw");
    const b = Buffer.alloc(6 << 20);
    for (let i = 0; i < b.length; i += 8192) b.fill((i >> 13) & 0xff, i, i + 3000);
    writeFileSync(src, b);
    for (const sub of [
      "monolithicSparse",
      "monolithicFlat",
      "twoGbMaxExtentSparse",
      "twoGbMaxExtentFlat",
      "streamOptimized",
    ]) {
      const dir = t.path(`q72-${sub}`);
      mkdirSync(dir);
      const img = `${dir}/d.vmdk`;
      const r = qimg(["convert", "-f", "raw", "-O", "vmdk", "-o", `subformat=${sub}`, src, img]);
      expect(r.status, r.stderr).toBe(0);
      runOk(q72, ["check", "-f", "vmdk", img]);
      runOk(q72, ["compare", "-f", "raw", "-F", "vmdk", src, img]);
    }
  });

  it("a child with backing_file: parentCID links to its parent, reads fall through", async () => {
    const base = t.path("base.vmdk");
    const top = t.path("top.vmdk");
    runOk("qemu-img", ["create", "-q", "-f", "vmdk", base, "4M"]);
    runOk("qemu-io", ["-f", "vmdk", "-c", "write -P 0x5a 0 4M", base]);
    const r = qimg(["create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top]);
    expect(r.status, r.stderr).toBe(0);
    const qi = JSON.parse(runOk("qemu-img", ["info", "--output=json", top]));
    const bi = JSON.parse(runOk("qemu-img", ["info", "--output=json", base]));
    expect(qi["format-specific"].data["parent-cid"]).toBe(bi["format-specific"].data.cid);
    const img = await open(top);
    await img.write(8192, Buffer.alloc(4096, 0x11));
    await img.close();
    const q = spawnSync(
      "qemu-io",
      ["-f", "vmdk", "-c", "read -P 0x11 8192 4096", "-c", "read -P 0x5a 0 8192", top],
      {
        encoding: "utf8",
      },
    );
    expect(q.stdout).not.toContain("Pattern verification failed");
    expect(q.status).toBe(0);
    runOk("qemu-img", ["check", top]);
  });

  it("extent names pass the implicit-open gate: absolute and .. refused unless policy all", async () => {
    const dir = t.path("gate");
    mkdirSync(`${dir}/sub`, { recursive: true });
    runOk("qemu-img", ["create", "-q", "-f", "raw", `${dir}/data.raw`, "1M"]);
    runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x42 0 1M", `${dir}/data.raw`]);
    const desc = (name: string) =>
      `# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 2048 FLAT "${name}" 0\n`;
    const cases: Array<[string, string]> = [
      ["abs.vmdk", `${dir}/data.raw`],
      ["sub/dotdot.vmdk", "../data.raw"],
    ];
    for (const [f, name] of cases) {
      writeFileSync(`${dir}/${f}`, desc(name));
      const r = qimg(["info", "-f", "vmdk", `${dir}/${f}`]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("outside its directory");
      await expect(open(`${dir}/${f}`, { readOnly: true })).rejects.toMatchObject({
        code: "ERR_QIMG_UNSUPPORTED",
      });
      const img = await open(`${dir}/${f}`, { readOnly: true, implicit: "all" });
      const buf = await img.read(4096, 512);
      expect(buf.every((x) => x === 0x42)).toBe(true);
      await img.close();
      await expect(open(`${dir}/${f}`, { readOnly: true, implicit: "none" })).rejects.toMatchObject({
        code: "ERR_QIMG_UNSUPPORTED",
      });
    }
    // A plain relative name in the same directory opens under the default policy.
    writeFileSync(`${dir}/ok.vmdk`, desc("data.raw"));
    const img = await open(`${dir}/ok.vmdk`, { readOnly: true });
    expect(img.virtualSize).toBe(1 << 20);
    await img.close();
  });
});
