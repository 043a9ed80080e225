/**
 * qcow2 external data files (`data_file`, `data_file_raw`) against qemu-img: images QEMU made
 * read, map, check and `info` exactly as qemu-img reports them; images qimg creates and writes
 * pass `qemu-img check` and compare equal, and a raw data file stays the guest disk byte for byte.
 * The data file passes the implicit-open gate (refused by the untrusted profile); `info` never
 * opens it.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemuCheck, qemuDecode, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());
const json = (args: string[]) => JSON.parse(runOk("qemu-img", args));

describe.skipIf(!have)("qcow2 external data files", () => {
  it("QEMU-made images: contents, info, map and check equal qemu-img's", async () => {
    const f = t.path("q.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `data_file=${t.path("q.data")}`, f, "4M"]);
    runOk("qemu-io", [
      "-f",
      "qcow2",
      "-c",
      "write -P 3 1M 64k",
      "-c",
      "write -z 2M 64k",
      "-c",
      "write -P 4 3M 5k",
      f,
    ]);
    for (const cmd of ["info", "map"]) {
      const ours = qimg([cmd, "--output=json", f]);
      expect(ours.status, ours.stderr).toBe(0);
      expect(ours.stdout, cmd).toBe(runOk("qemu-img", [cmd, "--output=json", f]));
    }
    // qemu-img prints check's fields in its hash order; compare them as data.
    expect(JSON.parse(qimg(["check", "--output=json", f]).stdout)).toEqual(
      json(["check", "--output=json", f]),
    );
    const img = await open(f, { readOnly: true });
    const got = await img.read(0, img.virtualSize);
    await img.close();
    expect(sha256(got)).toBe(sha256(qemuDecode(f, "qcow2", t.path("q.dec"))));
  });

  for (const raw of [false, true]) {
    it(`qimg creates and writes (data_file_raw=${raw ? "on" : "off"}); qemu-img agrees`, async () => {
      const f = t.path(`w${raw}.qcow2`);
      const data = t.path(`w${raw}.data`);
      const o = `data_file=${data}${raw ? ",data_file_raw=on" : ""}`;
      const c = qimg(["create", "-q", "-f", "qcow2", "-o", o, f, "3M"]);
      expect(c.status, c.stderr).toBe(0);
      expect(JSON.parse(qimg(["info", "--output=json", f]).stdout)).toEqual(
        json(["info", "--output=json", f]),
      );
      const model = Buffer.alloc(3 << 20);
      const img = await open(f);
      let seed = raw ? 3 : 4;
      for (let i = 0; i < 50; i++) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        const off = seed % (model.length - 100_000);
        const len = 1 + ((seed >>> 5) % 90_000);
        if (i % 5 === 4) {
          await img.writeZeroes(off, len, { mayUnmap: i % 2 === 0 });
          model.fill(0, off, off + len);
        } else {
          const b = Buffer.alloc(len, (seed >>> 24) | 1);
          await img.write(off, b);
          b.copy(model, off);
        }
      }
      expect((await img.read(0, model.length)).equals(model)).toBe(true);
      await img.close();
      expect(qemuCheck(f).status).toBe(0);
      const exp = t.path(`w${raw}.expect`);
      writeFileSync(exp, model);
      expect(run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", f, exp]).status).toBe(0);
      if (raw) expect(sha256(readFileSync(data))).toBe(sha256(model));
      expect(JSON.parse(qimg(["check", "--output=json", f]).stdout)).toEqual(
        json(["check", "--output=json", f]),
      );
    });
  }

  it("the gate: refused when untrusted; info works without the data file", async () => {
    const f = t.path("g.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `data_file=${t.path("g.data")}`, f, "1M"]);
    await expect(open(f, { readOnly: true, implicit: "none" })).rejects.toMatchObject({
      code: "ERR_QIMG_UNSUPPORTED",
    });
    rmSync(t.path("g.data"));
    const i = qimg(["info", "--output=json", f]);
    expect(i.status, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout)["format-specific"].data["data-file"]).toBe(t.path("g.data"));
    const r = qimg(["convert", "-O", "raw", f, t.path("g.raw")]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("g.data");
  });

  it("qemu-img's refusals", () => {
    const v2 = qimg([
      "create",
      "-f",
      "qcow2",
      "-o",
      "data_file=x.data,compat=0.10",
      t.path("v2.qcow2"),
      "1M",
    ]);
    expect(v2.status).toBe(1);
    expect(v2.stderr).toContain("External data files are only supported with compatibility level 1.1");
    const noFile = qimg(["create", "-f", "qcow2", "-o", "data_file_raw=on", t.path("n.qcow2"), "1M"]);
    expect(noFile.status).toBe(1);
    expect(noFile.stderr).toContain("data-file-raw requires data-file");
  });
});
