/**
 * bochs, cloop, dmg and parallels through the CLI: probing by content, `info` and `map` JSON
 * field by field against qemu-img, `convert` to qcow2 and raw decoding to MANIFEST.md's sha256,
 * parallels `create`/`check` against qemu-img.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qemu72, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const SAMPLES = join(import.meta.dirname, "../../../shared/samples");
const haveSamples = existsSync(SAMPLES);
if (!haveSamples) console.warn(`SKIP: ${SAMPLES} is absent; sample tests are skipped`);
const have = hasPeer("qemu-img") && haveSamples;
const t = tempDir();
afterAll(() => t.cleanup());

/** Samples QEMU decodes, with their format and the sha256 of the raw decode (MANIFEST.md). */
const cases: [string, string, string][] = [
  ["qemu-iotests/empty.bochs", "bochs", "85e614bc2ef17bec493b849dbeea34687ba52d7b1fedc4e5fc3729b0fb059aad"],
  [
    "generated/bximage-growing.bochs",
    "bochs",
    "b60cb9db0c85cf7b22fc79a0dbe5c49d633521ececb4b779d066c16fb8b68625",
  ],
  [
    "qemu-iotests/simple-pattern.cloop",
    "cloop",
    "7c77af2771e0f86b7ec9707374c7416037fedae45cb0e6e27fbdf55688a5dd12",
  ],
  [
    "generated/cloop-v2-64k.cloop",
    "cloop",
    "b60cb9db0c85cf7b22fc79a0dbe5c49d633521ececb4b779d066c16fb8b68625",
  ],
  ["qemu-iotests/simple-dmg.dmg", "dmg", "20647e0a98a830a6a250b91e0e6d7200a872caea07b87a3c19611f3dd031c9df"],
  [
    "node-udif/compression-zlib.dmg",
    "dmg",
    "0786ad1fdcba31a3f03ee80eb1d6e8c7ee2f4647a2b4b6f1855c9fe0719784de",
  ],
  [
    "qemu-iotests/parallels-v1",
    "parallels",
    "15faf41ebc93b5f734341cb7a2d909001e3f7306960f9d8bc63894f2a8e5bc45",
  ],
  [
    "qemu-iotests/parallels-v2",
    "parallels",
    "15faf41ebc93b5f734341cb7a2d909001e3f7306960f9d8bc63894f2a8e5bc45",
  ],
];

describe.skipIf(!have)("read-only formats and parallels through the CLI", () => {
  for (const [name, format, sha] of cases) {
    it(`${name}: probe, info, map and convert agree with qemu-img`, () => {
      const src = join(SAMPLES, name);
      const ours = JSON.parse(qimg(["info", "--output=json", src]).stdout);
      const theirs = JSON.parse(runOk("qemu-img", ["info", "--output=json", "-f", format, src]));
      expect(ours.format).toBe(format);
      for (const k of ["virtual-size", "format", "filename", "actual-size", "dirty-flag", "cluster-size"]) {
        expect(ours[k], k).toEqual(theirs[k]);
      }
      const mapOurs = JSON.parse(qimg(["map", "--output=json", "-f", format, src]).stdout);
      const mapTheirs = JSON.parse(runOk("qemu-img", ["map", "--output=json", "-f", format, src]));
      expect(mapOurs).toEqual(mapTheirs);
      const q = t.path(`${format}-${sha.slice(0, 6)}.qcow2`);
      expect(qimg(["convert", "-O", "qcow2", src, q]).status).toBe(0);
      expect(run("qemu-img", ["check", q]).status).toBe(0);
      const raw = t.path("out.raw");
      runOk("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", q, raw]);
      expect(sha256(readFileSync(raw))).toBe(sha);
    });
  }

  it("dmg is probed by content, whatever the name", () => {
    const src = join(SAMPLES, "node-udif/compression-bz2.dmg");
    const copy = t.path("disk.img");
    runOk("cp", [src, copy]);
    const info = JSON.parse(qimg(["info", "--output=json", copy]).stdout);
    expect(info.format).toBe("dmg");
    const raw = t.path("bz2.raw");
    expect(qimg(["convert", "-O", "raw", copy, raw]).status).toBe(0);
    expect(sha256(readFileSync(raw))).toBe(
      "0786ad1fdcba31a3f03ee80eb1d6e8c7ee2f4647a2b4b6f1855c9fe0719784de",
    );
  });

  it("read-only formats refuse create and check like qemu-img", () => {
    for (const f of ["bochs", "cloop", "dmg"]) {
      const r = qimg(["create", "-f", f, t.path(`x.${f}`), "1M"]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`Format driver '${f}' does not support image creation`);
    }
    const r = qimg(["check", join(SAMPLES, "qemu-iotests/empty.bochs")]);
    expect(r.status).toBe(63);
    expect(run("qemu-img", ["check", join(SAMPLES, "qemu-iotests/empty.bochs")]).status).toBe(63);
    // A repair needs a writable open, which these drivers refuse as qemu-img does.
    const copy = t.path("e.bochs");
    writeFileSync(copy, readFileSync(join(SAMPLES, "qemu-iotests/empty.bochs")));
    const ours = qimg(["check", "-r", "all", copy]);
    const theirs = run("qemu-img", ["check", "-r", "all", copy]);
    expect(ours.status).toBe(theirs.status);
    expect(ours.stderr).toContain("Image is read-only");
    expect(theirs.stderr).toContain("Image is read-only");
  });

  it("parallels create, -o help and check match qemu-img", () => {
    const a = t.path("q.prl");
    const b = t.path("m.prl");
    runOk("qemu-img", ["create", "-q", "-f", "parallels", "-o", "cluster_size=256k", a, "7M"]);
    expect(qimg(["create", "-q", "-f", "parallels", "-o", "cluster_size=256k", b, "7M"]).status).toBe(0);
    expect(readFileSync(b).equals(readFileSync(a))).toBe(true);
    // preallocation is the file protocol's: accepted without effect, metadata refused.
    const f = t.path("f.prl");
    expect(
      qimg(["create", "-q", "-f", "parallels", "-o", "cluster_size=256k,preallocation=full", f, "7M"]).status,
    ).toBe(0);
    expect(readFileSync(f).equals(readFileSync(a))).toBe(true);
    const meta = qimg(["create", "-q", "-f", "parallels", "-o", "preallocation=metadata", f, "7M"]);
    expect(meta.status).toBe(1);
    expect(meta.stderr).toContain("Unsupported preallocation mode: metadata");
    expect(qimg(["create", "-f", "parallels", "-o", "help"]).stdout).toBe(
      runOk("qemu-img", ["create", "-f", "parallels", "-o", "help"]),
    );
    runOk("qemu-io", ["-c", "write -P 7 0 300k", "-c", "write -P 8 5M 4k", a]);
    const ours = JSON.parse(qimg(["check", "--output=json", a]).stdout);
    const theirs = JSON.parse(runOk("qemu-img", ["check", "--output=json", a]));
    expect({ ...ours, filename: "" }).toEqual({ ...theirs, filename: "" });
    const dst = t.path("c.prl");
    expect(qimg(["convert", "-f", "parallels", "-O", "parallels", a, dst]).status).toBe(0);
    expect(run("qemu-img", ["check", dst]).status).toBe(0);
    expect(run("qemu-img", ["compare", a, dst]).status).toBe(0);
    // QEMU 7.2 (Debian bookworm's) agrees too, and writes the same empty image.
    const q72 = qemu72("qemu-img");
    if (q72) {
      expect(run(q72, ["check", dst]).status).toBe(0);
      const c = t.path("q72.prl");
      runOk(q72, ["create", "-q", "-f", "parallels", "-o", "cluster_size=256k", c, "7M"]);
      expect(readFileSync(b).equals(readFileSync(c))).toBe(true);
    }
  });
});
