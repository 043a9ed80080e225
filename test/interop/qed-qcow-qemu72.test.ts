/**
 * qed and qcow (v1) with qemu-img 7.2 (Debian bookworm's own, unpacked by test/peers/install.sh
 * under target/peers): images 7.2 writes read back identically in qimg with the same `check`
 * result, and images qimg writes (plain, compressed qcow) pass 7.2's `check` and compare equal
 * under 7.2's `compare`.
 */
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemu72, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const img72 = qemu72("qemu-img");
const io72 = qemu72("qemu-io");
const have = hasPeer("qemu-img") && img72 !== null && io72 !== null;
const t = tempDir();
afterAll(() => t.cleanup());
const q = (args: string[]) => runOk(img72 as string, args);

describe.skipIf(!have)("qed and qcow with qemu-img 7.2", () => {
  for (const [fmt, extra] of [
    ["qed", ["-o", "cluster_size=16k,table_size=2"]],
    ["qcow", []],
  ] as const) {
    it(`${fmt}: 7.2 → qimg and qimg → 7.2`, async () => {
      const src = t.path(`${fmt}.raw`);
      runOk("qemu-img", ["create", "-q", "-f", "raw", src, "3000k"]);
      runOk(io72 as string, ["-f", "raw", "-c", "write -P 0x5a 0 700k", "-c", "write -P 0xa5 2M 900k", src]);
      const f = t.path(`in.${fmt}`);
      q(["convert", "-f", "raw", "-O", fmt, ...extra, src, f]);
      runOk(io72 as string, ["-f", fmt, "-c", "write -P 0x77 100k 300k", f]);
      const img = await open(f, { readOnly: true });
      const ours = await img.read(0, img.virtualSize);
      await img.close();
      const dec = t.path(`in-${fmt}.dec`);
      q(["convert", "-f", fmt, "-O", "raw", f, dec]);
      expect(sha256(ours)).toBe(sha256(dec));
      const c72 = run(img72 as string, ["check", "--output=json", f]);
      const cm = qimg(["check", "--output=json", f]);
      expect(cm.status).toBe(c72.status);
      if (fmt === "qed") expect(JSON.parse(cm.stdout)).toEqual(JSON.parse(c72.stdout));
      const outs = [t.path(`out.${fmt}`)];
      expect(qimg(["convert", "-f", "raw", "-O", fmt, ...extra, src, outs[0]]).status).toBe(0);
      if (fmt === "qcow") {
        outs.push(t.path("out-c.qcow"));
        expect(qimg(["convert", "-c", "-f", "raw", "-O", "qcow", src, outs[1]]).status).toBe(0);
      }
      for (const o of outs) {
        expect(run(img72 as string, ["check", o]).status).toBe(fmt === "qed" ? 0 : 63);
        expect(run(img72 as string, ["compare", "-f", fmt, "-F", "raw", o, src]).status, o).toBe(0);
      }
    });
  }
});
