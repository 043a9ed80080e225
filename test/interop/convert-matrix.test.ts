/**
 * `convert` between every pair of the writable formats of the foundation and the formats issue
 * (raw, qcow2, qed, qcow, vdi, vpc): each target compares equal to the source under
 * `qemu-img compare`, passes `qemu-img check` where the format has one, and stays sparse (its
 * allocated size is far below the virtual size for a mostly empty source).
 */
import { statSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());

const FORMATS = ["raw", "qcow2", "qed", "qcow", "vdi", "vpc"] as const;
/** qemu-img check exits 63 ("no check") for these. */
const NO_CHECK = new Set(["raw", "qcow", "vpc"]);

describe.skipIf(!have)("convert between every pair of formats", () => {
  it("36 conversions agree with qemu-img and stay sparse", () => {
    // 16 MiB (a size vpc's CHS geometry keeps exactly), patterns at both ends and in the middle.
    const src = t.path("src.raw");
    runOk("qemu-img", ["create", "-q", "-f", "raw", src, "16M"]);
    runOk("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0x61 0 64k",
      "-c",
      "write -P 0x62 7M 300k",
      "-c",
      "write -P 0x63 16320k 64k",
      src,
    ]);
    const firsts: Record<string, string> = {};
    for (const a of FORMATS) {
      const f = t.path(`a.${a}`);
      const r = qimg(["convert", "-f", "raw", "-O", a, src, f]);
      expect(r.status, `raw→${a}: ${r.stderr}`).toBe(0);
      firsts[a] = f;
    }
    for (const a of FORMATS) {
      for (const b of FORMATS) {
        const out = t.path(`${a}-to.${b}`);
        const r = qimg(["convert", "-f", a, "-O", b, firsts[a], out]);
        expect(r.status, `${a}→${b}: ${r.stderr}`).toBe(0);
        const cmp = run("qemu-img", ["compare", "-f", "raw", "-F", b, src, out]);
        expect(cmp.status, `${a}→${b}: ${cmp.stdout}${cmp.stderr}`).toBe(0);
        if (!NO_CHECK.has(b)) {
          const chk = run("qemu-img", ["check", "-f", b, out]);
          expect(chk.status, `${a}→${b} check: ${chk.stdout}`).toBe(0);
        }
        const used = statSync(out).blocks * 512;
        expect(used, `${a}→${b} stays sparse`).toBeLessThan(4 << 20);
      }
    }
  });
});
