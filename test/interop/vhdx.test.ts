/**
 * vhdx through the CLI against qemu-img and independent readers: create for every subformat and
 * option (then `qemu-img check`, and `info` field by field), convert raw → vhdx and vhdx → raw
 * both ways with `qemu-img compare`, 7-Zip and libvhdi reading what qimg converts, and the
 * dirty-log sample: `info` and reads work read-only (replayed in memory, the file untouched,
 * where QEMU refuses), `check` reports the log, `check -r all` replays it as qemu-img does.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir("qimg-vhdx-");
afterAll(() => t.cleanup());
const SAMPLES = fileURLToPath(new URL("../../../shared/samples/qemu-iotests", import.meta.url));
const qemu10 = have && /version (\d+)/.exec(runOk("qemu-img", ["--version"]))?.[1] === "10";

function tool(name: string, cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    console.warn(`SKIP: ${name} is not installed (test/peers/install.sh); its checks are skipped`);
    return false;
  }
  return true;
}
const has7z = have && tool("7zz (apt 7zip)", "7zz", ["i"]);
const hasVhdi = have && tool("python3-libvhdi", "/usr/bin/python3", ["-c", "import pyvhdi"]);

/** qemu-img info JSON without the fields that name the file or its allocation. */
function info(json: string, keepChildren: boolean): Record<string, unknown> {
  const v = JSON.parse(json);
  delete v.filename;
  delete v["actual-size"];
  if (!keepChildren) delete v.children;
  else {
    for (const c of v.children ?? []) {
      delete c.info.filename;
      delete c.info["actual-size"];
    }
  }
  return v;
}

/** A 20 MiB raw source: patterned data, zeros, and a hole. */
function source(): string {
  const src = t.path("src.raw");
  const b = Buffer.alloc(20 << 20);
  for (let i = 0; i < b.length; i += 4096) if ((i >> 20) % 3 !== 1) b.fill((i >> 12) & 0xff, i, i + 4096);
  writeFileSync(src, b);
  return src;
}

describe.skipIf(!have)("vhdx against qemu-img", () => {
  const cases = [
    "subformat=dynamic",
    "subformat=dynamic,block_state_zero=off",
    "subformat=dynamic,block_size=1M,log_size=2M",
    "subformat=fixed",
    "subformat=fixed,block_state_zero=off,block_size=4M",
  ];
  it("create -o help equals qemu-img's; bad options fail as qemu-img's do", () => {
    expect(qimg(["create", "-f", "vhdx", "-o", "help"]).stdout).toBe(
      runOk("qemu-img", ["create", "-f", "vhdx", "-o", "help"]),
    );
    for (const o of ["block_size=3M", "log_size=0", "subformat=foo", "subformat=differencing"]) {
      const q = run("qemu-img", ["create", "-q", "-f", "vhdx", "-o", o, t.path("bad-q.vhdx"), "100M"]);
      const m = qimg(["create", "-q", "-f", "vhdx", "-o", o, t.path("bad-m.vhdx"), "100M"]);
      expect(q.status, o).toBe(1);
      expect(m.status, o).toBe(1);
      expect(m.stderr.replace(/^qimg: /, ""), o).toBe(q.stderr.replace(/^qemu-img: [^:]*: /, ""));
    }
    // Values qemu-img rounds (block size up to whole MiB, capped at 256 MiB; log up to whole MiB).
    for (const o of ["block_size=512K", "block_size=512M", "log_size=1500K"]) {
      expect(qimg(["create", "-q", "-f", "vhdx", "-o", o, t.path("r-m.vhdx"), "24M"]).status, o).toBe(0);
      runOk("qemu-img", ["create", "-q", "-f", "vhdx", "-o", o, t.path("r-q.vhdx"), "24M"]);
      expect(info(qimg(["info", "--output=json", t.path("r-m.vhdx")]).stdout, false), o).toEqual(
        info(runOk("qemu-img", ["info", "--output=json", t.path("r-q.vhdx")]), false),
      );
      runOk("qemu-img", ["check", t.path("r-m.vhdx")]);
    }
  });

  for (const o of cases) {
    it(`create -o ${o}: qemu-img check passes and info equals qemu-img's`, () => {
      const ours = t.path("ours.vhdx");
      const theirs = t.path("theirs.vhdx");
      expect(qimg(["create", "-q", "-f", "vhdx", "-o", o, ours, "24M"]).status).toBe(0);
      runOk("qemu-img", ["create", "-q", "-f", "vhdx", "-o", o, theirs, "24M"]);
      runOk("qemu-img", ["check", "-f", "vhdx", ours]);
      const q = runOk("qemu-img", ["info", "--output=json", "-f", "vhdx", theirs]);
      const mine = qimg(["info", "--output=json", "-f", "vhdx", ours]);
      expect(mine.status).toBe(0);
      expect(info(mine.stdout, qemu10)).toEqual(info(q, qemu10));
      if (qemu10) {
        expect(qimg(["info", "-f", "vhdx", ours]).stdout).toBe(
          runOk("qemu-img", ["info", "-f", "vhdx", ours]),
        );
      }
      const c = qimg(["check", "--output=json", "-f", "vhdx", ours]);
      expect(c.status).toBe(0);
      expect(JSON.parse(c.stdout)).toEqual(
        JSON.parse(
          runOk("qemu-img", ["check", "--output=json", "-f", "vhdx", ours]).replaceAll(theirs, ours),
        ),
      );
    });
  }

  for (const o of [
    "subformat=dynamic",
    "subformat=fixed,block_size=2M",
    "subformat=dynamic,block_state_zero=off",
  ]) {
    it(`convert raw → vhdx (${o}) both ways, compared by qemu-img, 7-Zip and libvhdi`, () => {
      const src = source();
      const ours = t.path("c-ours.vhdx");
      const theirs = t.path("c-theirs.vhdx");
      expect(qimg(["convert", "-f", "raw", "-O", "vhdx", "-o", o, src, ours]).status).toBe(0);
      runOk("qemu-img", ["check", "-f", "vhdx", ours]);
      runOk("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", src, ours]);
      runOk("qemu-img", ["convert", "-f", "raw", "-O", "vhdx", "-o", o, src, theirs]);
      const back = t.path("back.raw");
      expect(qimg(["convert", "-f", "vhdx", "-O", "raw", theirs, back]).status).toBe(0);
      expect(readFileSync(back).equals(readFileSync(src))).toBe(true);
      const want = createHash("sha256").update(readFileSync(src)).digest("hex");
      if (has7z) {
        const r = spawnSync("7zz", ["e", "-so", "-tVHDX", ours], { maxBuffer: 1 << 30 });
        expect(r.status).toBe(0);
        expect(createHash("sha256").update(r.stdout).digest("hex")).toBe(want);
      }
      if (hasVhdi) {
        const py =
          "import sys,pyvhdi\nf=pyvhdi.file();f.open(sys.argv[1])\nsys.stdout.buffer.write(f.read_buffer(f.get_media_size()))";
        const r = spawnSync("/usr/bin/python3", ["-c", py, ours], { maxBuffer: 1 << 30 });
        expect(r.status).toBe(0);
        expect(createHash("sha256").update(r.stdout).digest("hex")).toBe(want);
      }
    });
  }
});

describe.skipIf(!existsSync(SAMPLES))("vhdx dirty-log sample through the CLI", () => {
  it("reads read-only by replaying the log in memory; check -r all replays it in place", () => {
    const img = t.path("dirty.vhdx");
    writeFileSync(
      img,
      spawnSync("bunzip2", ["-kc", `${SAMPLES}/iotest-dirtylog-10G-4M.vhdx.bz2`], { maxBuffer: 64 << 20 })
        .stdout,
    );
    const before = createHash("sha256").update(readFileSync(img)).digest("hex");
    const i = qimg(["info", "--output=json", img]);
    expect(i.status).toBe(0);
    expect(JSON.parse(i.stdout)["virtual-size"]).toBe(10737418240);
    const c = qimg(["check", img]);
    expect(c.status).toBe(2);
    expect(c.stderr + c.stdout).toContain("replayed");
    expect(createHash("sha256").update(readFileSync(img)).digest("hex")).toBe(before);
    const r = qimg(["check", "-r", "all", img]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("1 corruptions");
    if (have) runOk("qemu-img", ["check", "-f", "vhdx", img]);
    expect(qimg(["check", img]).status).toBe(0);
  });
});

it("probes vhdx by its signature", () => {
  const img = t.path("probe.vhdx");
  expect(qimg(["create", "-q", "-f", "vhdx", img, "1M"]).status).toBe(0);
  expect(JSON.parse(qimg(["info", "--output=json", img]).stdout).format).toBe("vhdx");
});

/**
 * A differencing child of `parent` (both 8 MiB, 1 MiB blocks), assembled from a qimg-made
 * dynamic image: file parameters get has_parent, the metadata table a parent locator naming
 * `parent.vhdx`, and block 0 becomes fully present with 0x22 (no Linux tool writes differencing
 * VHDX; QEMU refuses them).
 */
function makeChild(child: string): void {
  expect(
    qimg(["create", "-q", "-f", "vhdx", "-o", "block_size=1M,block_state_zero=off", child, "8M"]).status,
  ).toBe(0);
  const b = readFileSync(child);
  const bat = Number(b.readBigUInt64LE(0x30000 + 16 + 16));
  const md = Number(b.readBigUInt64LE(0x30000 + 48 + 16));
  // Parent locator item: VHDX locator type, two key/value pairs (UTF-16LE).
  const kv: [string, string][] = [
    ["parent_linkage", "{00000000-0000-0000-0000-000000000001}"],
    ["relative_path", ".\\parent.vhdx"],
  ];
  const head = Buffer.alloc(20 + 12 * kv.length);
  Buffer.from("b7ef4ab09ed1814ab78925b8e9445913", "hex").copy(head, 0);
  head.writeUInt16LE(kv.length, 18);
  const strings: Buffer[] = [];
  let at = head.length;
  kv.forEach(([k, v], i) => {
    const kb = Buffer.from(k, "utf16le");
    const vb = Buffer.from(v, "utf16le");
    head.writeUInt32LE(at, 20 + i * 12);
    head.writeUInt32LE(at + kb.length, 24 + i * 12);
    head.writeUInt16LE(kb.length, 28 + i * 12);
    head.writeUInt16LE(vb.length, 30 + i * 12);
    strings.push(kb, vb);
    at += kb.length + vb.length;
  });
  const loc = Buffer.concat([head, ...strings]);
  const itemAt = 0x10000 + 40; // after the five items qimg writes (8+8+16+4+4 bytes)
  loc.copy(b, md + itemAt);
  const e = md + 32 + 5 * 32;
  Buffer.from("2d5fd3a80bb34d45abf7d3d84834ab0c", "hex").copy(b, e);
  b.writeUInt32LE(itemAt, e + 16);
  b.writeUInt32LE(loc.length, e + 20);
  b.writeUInt32LE(4, e + 24);
  b.writeUInt16LE(6, md + 10);
  b.writeUInt32LE(2, md + 0x10004); // has_parent
  const dataAt = Math.ceil(b.length / (1 << 20)) * (1 << 20);
  b.writeBigUInt64LE(BigInt(dataAt) | 6n, bat);
  const out = Buffer.alloc(dataAt + (1 << 20));
  b.copy(out);
  out.fill(0x22, dataAt);
  writeFileSync(child, out);
}

describe.skipIf(!have)("vhdx differencing images (read-only, beyond QEMU)", () => {
  it("read through the parent named by the parent locator, via the implicit-open gate", async () => {
    const parent = t.path("parent.vhdx");
    const child = t.path("child.vhdx");
    expect(qimg(["create", "-q", "-f", "vhdx", "-o", "block_size=1M", parent, "8M"]).status).toBe(0);
    runOk("qemu-io", ["-f", "vhdx", "-c", "write -P 0x11 0 8M", parent]);
    makeChild(child);
    const i = qimg(["info", "--output=json", child]);
    expect(i.status).toBe(0);
    expect(JSON.parse(i.stdout)["backing-filename"]).toBe("./parent.vhdx");
    const out = t.path("child.raw");
    expect(qimg(["convert", "-O", "raw", child, out]).status).toBe(0);
    const want = Buffer.alloc(8 << 20, 0x11);
    want.fill(0x22, 0, 1 << 20);
    expect(readFileSync(out).equals(want)).toBe(true);
    // QEMU refuses the child; the untrusted profile refuses to follow the parent.
    expect(run("qemu-img", ["info", child]).status).toBe(1);
    const { open } = await import("../../ts/index.js");
    await expect(open(child, { readOnly: true, implicit: "none" })).rejects.toMatchObject({
      code: "ERR_QIMG_UNSUPPORTED",
    });
  });
});
