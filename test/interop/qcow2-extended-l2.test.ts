/**
 * Extended L2 entries through the CLI: `map`, `info` and `check` of subcluster images QEMU wrote
 * equal qemu-img's JSON field by field; `create -o extended_l2=on` makes images qemu-img reports
 * the same way; qemu-img's refusals (small clusters, compat=0.10) are qimg's too.
 */
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir();
afterAll(() => t.cleanup());
const json = (args: string[]) => JSON.parse(runOk("qemu-img", args));

describe.skipIf(!have)("extended L2 (subclusters)", () => {
  for (const cluster of ["16k", "64k", "1M"]) {
    it(`cluster_size=${cluster}: map, info and check equal qemu-img's`, () => {
      const base = t.path(`base-${cluster}.qcow2`);
      const top = t.path(`top-${cluster}.qcow2`);
      runOk("qemu-img", ["create", "-q", "-f", "qcow2", base, "3M"]);
      runOk("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 3M", base]);
      const o = `extended_l2=on,cluster_size=${cluster}`;
      runOk("qemu-img", ["create", "-q", "-f", "qcow2", "-o", o, "-b", base, "-F", "qcow2", top]);
      runOk("qemu-io", [
        "-f",
        "qcow2",
        "-c",
        "write -P 2 1k 3k",
        "-c",
        "write -z 40k 8k",
        "-c",
        "write -P 3 1M 100k",
        "-c",
        "discard 1M 64k",
        top,
      ]);
      for (const cmd of [
        ["map", "--output=json"],
        ["info", "--output=json"],
        ["check", "--output=json"],
      ]) {
        const ours = qimg([...cmd, top]);
        expect(ours.status, ours.stderr).toBe(0);
        expect(JSON.parse(ours.stdout), cmd[0]).toEqual(json([...cmd, top]));
      }
    });
  }

  it("create -o extended_l2=on, and qemu-img's refusals", () => {
    const f = t.path("new.qcow2");
    const r = qimg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on", f, "5M"]);
    expect(r.status, r.stderr).toBe(0);
    expect(json(["info", "--output=json", f])["format-specific"].data["extended-l2"]).toBe(true);
    expect(JSON.parse(qimg(["info", "--output=json", f]).stdout)).toEqual(json(["info", "--output=json", f]));
    const small = qimg([
      "create",
      "-f",
      "qcow2",
      "-o",
      "extended_l2=on,cluster_size=8k",
      t.path("s.qcow2"),
      "1M",
    ]);
    expect(small.status).toBe(1);
    expect(small.stderr).toContain(
      "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
    );
    const v2 = qimg(["create", "-f", "qcow2", "-o", "extended_l2=on,compat=0.10", t.path("v2.qcow2"), "1M"]);
    expect(v2.status).toBe(1);
    expect(v2.stderr).toContain("Extended L2 entries are only supported with compatibility level 1.1");
  });
});
