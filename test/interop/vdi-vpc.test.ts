/**
 * vdi and vpc through the CLI against qemu-img 10 and independent readers: `create -o help`,
 * create for every option (then `qemu-img check`/`info` field by field), `info`, `map` and
 * `check` output equal to qemu-img's, `convert` between raw, qcow2, vdi and vpc both ways
 * (contents equal, targets sparse), images read by 7-Zip, libvhdi and bximage, images bximage
 * makes read by qimg, and the sample images (afl5.img refused).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { open } from "../../ts/index.js";
import { hasPeer, qemu72, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir("qimg-vdivpc-");
afterAll(() => t.cleanup());
const SAMPLES = fileURLToPath(new URL("../../../shared/samples", import.meta.url));

/** Is `tool` runnable (prints why not)? */
function hasTool(name: string, cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    console.warn(`SKIP: ${name} is not installed (test/peers/install.sh); its checks are skipped`);
    return false;
  }
  return true;
}

const has7z = have && hasTool("7zz (apt 7zip)", "7zz", ["i"]);
const hasVhdi = have && hasTool("python3-libvhdi", "/usr/bin/python3", ["-c", "import pyvhdi"]);
const hasBx = have && hasTool("bximage (apt bochs)", "sh", ["-c", "command -v bximage"]);

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** The first `n` guest bytes as qemu-img decodes them. */
function qemuBytes(img: string, fmt: string): Buffer {
  const out = `${img}.q.raw`;
  runOk("qemu-img", ["convert", "-U", "-f", fmt, "-O", "raw", img, out]);
  return readFileSync(out);
}

/** Guest bytes as an independent reader decodes them. */
function readerBytes(reader: "7zz" | "pyvhdi" | "bximage", img: string, fmt: "vdi" | "vpc"): Buffer {
  if (reader === "7zz") {
    const r = spawnSync("7zz", ["e", "-so", fmt === "vdi" ? "-tVDI" : "-tVHD", img], { maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(`7zz failed on ${img}: ${r.stderr}`);
    return r.stdout;
  }
  if (reader === "pyvhdi") {
    const py =
      "import sys,pyvhdi\nf=pyvhdi.file();f.open(sys.argv[1])\nn=f.get_media_size()\nsys.stdout.buffer.write(f.read_buffer(n))";
    const r = spawnSync("/usr/bin/python3", ["-c", py, img], { maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(`pyvhdi failed on ${img}: ${r.stderr}`);
    return r.stdout;
  }
  const out = `${img}.bx.raw`;
  const r = spawnSync("bximage", ["-func=convert", "-imgmode=flat", "-q", img, out], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`bximage failed on ${img}: ${r.stdout}${r.stderr}`);
  return readFileSync(out);
}

/** `a` and `b` hold the same guest bytes, the longer one only zeros past the shorter. */
function sameGuest(a: Buffer, b: Buffer): boolean {
  const n = Math.min(a.length, b.length);
  if (!a.subarray(0, n).equals(b.subarray(0, n))) return false;
  const tail = a.length > n ? a.subarray(n) : b.subarray(n);
  return tail.every((x) => x === 0);
}

/** A 9 MiB raw source: random data, a zero block, a pattern, and an unallocated tail. */
function source(): string {
  const src = t.path("src.raw");
  runOk("qemu-img", ["create", "-q", "-f", "raw", src, "9M"]);
  runOk("qemu-io", [
    "-f",
    "raw",
    "-c",
    "write -P 0x11 0 1M",
    "-c",
    "write -P 0x22 1536k 333k",
    "-c",
    "write -P 0x33 4M 1M",
    "-c",
    "write -P 0x44 8M 17k",
    src,
  ]);
  return src;
}

/** Drop the fields that name the file or depend on its allocation. */
function infoCore(j: Record<string, unknown>): Record<string, unknown> {
  const { children: _c, filename: _f, "actual-size": _a, ...rest } = j;
  return rest;
}

describe.skipIf(!have)("vdi and vpc against qemu-img", () => {
  const src = have ? source() : "";
  const srcBytes = have ? readFileSync(src) : Buffer.alloc(0);

  it("create -o help lists qemu-img's options", () => {
    for (const f of ["vdi", "vpc"]) {
      const ours = qimg(["create", "-f", f, "-o", "help"]);
      const theirs = run("qemu-img", ["create", "-f", f, "-o", "help"]);
      expect(ours.stdout, f).toBe(theirs.stdout);
    }
  });

  const creates: Array<[string, string, string]> = [
    ["vdi", "static=off", "100M"],
    ["vdi", "static=on", "5M"],
    ["vdi", "static=off,preallocation=full", "3M"],
    ["vdi", "static=off", "1000"],
    ["vpc", "subformat=dynamic", "100M"],
    ["vpc", "subformat=dynamic,force_size=on", "100M"],
    ["vpc", "subformat=fixed", "10M"],
    ["vpc", "subformat=fixed,force_size=on", "10M"],
    ["vpc", "subformat=dynamic", "130G"],
  ];
  for (const [fmt, opts, size] of creates) {
    it(`create -f ${fmt} -o ${opts} ${size}: info, map and check equal qemu-img's`, () => {
      const ours = t.path(`c-${fmt}.img`);
      const theirs = t.path(`q-${fmt}.img`);
      const r = qimg(["create", "-q", "-f", fmt, "-o", opts, ours, size]);
      expect(r.status, r.stderr).toBe(0);
      runOk("qemu-img", ["create", "-q", "-f", fmt, "-o", opts, theirs, size]);
      expect(statSync(ours).size).toBe(statSync(theirs).size);
      const qi = (p: string) => JSON.parse(runOk("qemu-img", ["info", "--output=json", "-f", fmt, p]));
      expect(infoCore(qi(ours))).toEqual(infoCore(qi(theirs)));
      // Our info and map of our image equal qemu-img's of the same image.
      const oi = qimg(["info", "--output=json", "-f", fmt, ours]);
      expect(JSON.parse(oi.stdout)).toEqual(qi(ours));
      const hi = qimg(["info", "-f", fmt, ours]);
      expect(hi.stdout).toBe(runOk("qemu-img", ["info", "-f", fmt, ours]));
      const om = qimg(["map", "--output=json", "-f", fmt, ours]);
      expect(om.stdout).toBe(runOk("qemu-img", ["map", "--output=json", "-f", fmt, ours]));
      const qc = run("qemu-img", ["check", "-f", fmt, ours]);
      const oc = qimg(["check", "-f", fmt, ours]);
      expect([oc.status, oc.stdout, oc.stderr.replace(/^qimg/, "qemu-img")]).toEqual([
        qc.status,
        qc.stdout,
        qc.stderr,
      ]);
    });
  }

  it("check of a corrupt vdi: report, JSON and exit code equal qemu-img's", () => {
    const v = t.path("corrupt.vdi");
    runOk("qemu-img", ["create", "-q", "-f", "vdi", v, "4M"]);
    runOk("qemu-io", ["-f", "vdi", "-c", "write -P 1 0 2M", v]);
    const b = readFileSync(v);
    b.writeUInt32LE(0, 516);
    b.writeUInt32LE(77, 520);
    writeFileSync(v, b);
    for (const o of ["human", "json"]) {
      const q = run("qemu-img", ["check", `--output=${o}`, "-f", "vdi", v]);
      const m = qimg(["check", `--output=${o}`, "-f", "vdi", v]);
      expect([m.status, m.stdout, m.stderr], o).toEqual([q.status, q.stdout, q.stderr]);
    }
  });

  it("check -r on vdi and check on vpc: exit 63 and qemu-img's message", () => {
    const v = t.path("r.vdi");
    const h = t.path("r.vhd");
    runOk("qemu-img", ["create", "-q", "-f", "vdi", v, "4M"]);
    runOk("qemu-img", ["create", "-q", "-f", "vpc", h, "4M"]);
    for (const args of [
      ["check", "-r", "all", "-f", "vdi", v],
      ["check", "-r", "leaks", "--output=json", "-f", "vdi", v],
      ["check", "-f", "vpc", h],
    ]) {
      const q = run("qemu-img", args);
      const o = qimg(args);
      expect([o.status, o.stdout, o.stderr.replace(/^qimg/, "qemu-img")], args.join(" ")).toEqual([
        q.status,
        q.stdout,
        q.stderr,
      ]);
    }
  });

  const targets: Array<[string, string, string[]]> = [
    ["raw", "raw", []],
    ["qcow2", "qcow2", []],
    ["vdi", "vdi", []],
    ["vdi-static", "vdi", ["-o", "static=on"]],
    ["vpc", "vpc", []],
    ["vpc-fixed", "vpc", ["-o", "subformat=fixed"]],
    ["vpc-force", "vpc", ["-o", "force_size=on"]],
  ];
  for (const [name, fmt, extra] of targets) {
    it(`convert raw → ${name} → raw, qemu-img agrees, target sparse, readers agree`, () => {
      const img = t.path(`cv-${name}.img`);
      let r = qimg(["convert", "-f", "raw", "-O", fmt, ...extra, src, img]);
      expect(r.status, r.stderr).toBe(0);
      expect(sameGuest(qemuBytes(img, fmt), srcBytes)).toBe(true);
      if (fmt === "vdi") expect(run("qemu-img", ["check", "-f", "vdi", img]).status).toBe(0);
      expect(qimg(["map", "--output=json", "-f", fmt, img]).stdout, "map").toBe(
        runOk("qemu-img", ["map", "--output=json", "-f", fmt, img]),
      );
      if (!name.endsWith("static") && !name.endsWith("fixed")) {
        expect(statSync(img).blocks * 512, "sparse").toBeLessThan(8 << 20);
      }
      const back = t.path(`cv-${name}.back.raw`);
      r = qimg(["convert", "-f", fmt, "-O", "raw", img, back]);
      expect(r.status, r.stderr).toBe(0);
      expect(sameGuest(readFileSync(back), srcBytes)).toBe(true);
      const readers: Array<"7zz" | "pyvhdi" | "bximage"> = [];
      if (fmt === "vdi" || fmt === "vpc") {
        if (has7z) readers.push("7zz");
        // bximage refuses VHDs with the largest CHS geometry (force_size), QEMU's own included.
        if (hasBx && name !== "vpc-force") readers.push("bximage");
        if (hasVhdi && fmt === "vpc") readers.push("pyvhdi");
      }
      for (const rd of readers) {
        expect(sameGuest(readerBytes(rd, img, fmt as "vdi" | "vpc"), srcBytes), rd).toBe(true);
      }
    });
  }

  for (const [name, fmt, extra] of targets.filter(([, f]) => f === "vdi" || f === "vpc")) {
    it(`qemu-img convert raw → ${name}, then qimg reads it: info, map and contents agree`, () => {
      const img = t.path(`qm-${name}.img`);
      runOk("qemu-img", ["convert", "-f", "raw", "-O", fmt, ...extra, src, img]);
      expect(JSON.parse(qimg(["info", "--output=json", "-f", fmt, img]).stdout)).toEqual(
        JSON.parse(runOk("qemu-img", ["info", "--output=json", "-f", fmt, img])),
      );
      expect(qimg(["map", "--output=json", "-f", fmt, img]).stdout).toBe(
        runOk("qemu-img", ["map", "--output=json", "-f", fmt, img]),
      );
      const out = t.path(`qm-${name}.raw`);
      expect(qimg(["convert", "-f", fmt, "-O", "raw", img, out]).status).toBe(0);
      expect(sameGuest(readFileSync(out), srcBytes)).toBe(true);
    });
  }

  const pairs: Array<[string, string]> = [
    ["vdi", "vpc"],
    ["vpc", "vdi"],
    ["vdi", "qcow2"],
    ["vpc", "qcow2"],
    ["vpc", "vpc"],
    ["vdi", "vdi"],
    ["qcow2", "vdi"],
    ["qcow2", "vpc"],
  ];
  for (const [from, to] of pairs) {
    it(`convert ${from} (made by qemu-img) → ${to} (by qimg): qemu-img compare`, () => {
      const a = t.path(`p-${from}-${to}.${from}`);
      const b = t.path(`p-${from}-${to}.out.${to}`);
      runOk("qemu-img", ["convert", "-f", "raw", "-O", from, src, a]);
      const r = qimg(["convert", "-f", from, "-O", to, a, b]);
      expect(r.status, r.stderr).toBe(0);
      expect(run("qemu-img", ["compare", "-f", from, "-F", to, a, b]).status).toBe(0);
      expect(statSync(b).blocks * 512, "sparse").toBeLessThan(8 << 20);
    });
  }

  it("create with a backing file: refused with qemu-img's message", () => {
    for (const f of ["vdi", "vpc"]) {
      const args = ["create", "-f", f, "-b", src, "-F", "raw", t.path(`b.${f}`)];
      const q = run("qemu-img", args);
      const o = qimg(args);
      expect(o.status).toBe(q.status);
      expect(q.stderr).toContain(`Backing file not supported for file format '${f}'`);
      expect(o.stderr).toContain(`Backing file not supported for file format '${f}'`);
    }
  });

  it("qemu-img 7.2 reads what qimg writes (vdi, vdi static, vpc dynamic, fixed, force_size)", () => {
    const q72 = qemu72("qemu-img");
    if (!q72) return;
    for (const [name, fmt, extra] of targets.filter(([, f]) => f === "vdi" || f === "vpc")) {
      const img = t.path(`q72-${name}.img`);
      expect(qimg(["convert", "-f", "raw", "-O", fmt, ...extra, src, img]).status).toBe(0);
      const out = t.path(`q72-${name}.raw`);
      runOk(q72, ["convert", "-f", fmt, "-O", "raw", img, out]);
      expect(sameGuest(readFileSync(out), srcBytes), name).toBe(true);
      if (fmt === "vdi") expect(run(q72, ["check", "-f", "vdi", img]).status, name).toBe(0);
    }
  });

  it("hostile images surface typed errors through the library", async () => {
    const bad = t.path("bad.vdi");
    runOk("qemu-img", ["create", "-q", "-f", "vdi", bad, "4M"]);
    const b = readFileSync(bad);
    b.writeUInt32LE(0x1234, 0x40);
    writeFileSync(bad, b);
    await expect(open(bad, { format: "vdi" })).rejects.toMatchObject({ code: "ERR_QIMG_WRONG_FORMAT" });
    b.writeUInt32LE(0xbeda107f, 0x40);
    b.writeUInt32LE(2 << 20, 0x178);
    writeFileSync(bad, b);
    await expect(open(bad, { format: "vdi" })).rejects.toMatchObject({ code: "ERR_QIMG_UNSUPPORTED" });
    if (existsSync(SAMPLES)) {
      await expect(
        open(`${SAMPLES}/qemu-iotests/afl5.img`, { format: "vpc", readOnly: true }),
      ).rejects.toMatchObject({
        code: "ERR_QIMG_CORRUPT",
        message: "Max Table Entries too large (1073741825)",
      });
    }
  });

  it("a fixed VHD probes as raw, as in QEMU, and opens with -f vpc", () => {
    const img = t.path("fixed.vhd");
    runOk("qemu-img", ["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", src, img]);
    expect(JSON.parse(qimg(["info", "--output=json", img]).stdout).format).toBe("raw");
    const out = t.path("fixed.back.raw");
    expect(qimg(["convert", "-f", "vpc", "-O", "raw", img, out]).status).toBe(0);
    expect(sameGuest(readFileSync(out), srcBytes)).toBe(true);
  });

  // bximage writes VHDs only (it reads VDI but has no mode to create one).
  it.skipIf(!hasBx)(
    "images bximage makes (converted from raw, and created empty) read as qemu-img reads them",
    () => {
      for (const [mode, fmt] of [["vpc", "vpc"]]) {
        const img = t.path(`bx.${fmt}`);
        const r = spawnSync("bximage", ["-func=convert", `-imgmode=${mode}`, "-q", src, img], {
          encoding: "utf8",
        });
        expect(r.status, r.stdout).toBe(0);
        const out = t.path(`bx.${fmt}.raw`);
        expect(qimg(["convert", "-f", fmt, "-O", "raw", img, out]).status).toBe(0);
        expect(sha(readFileSync(out)), fmt).toBe(sha(qemuBytes(img, fmt)));
        const made = t.path("bx-created.vhd");
        const c = spawnSync("bximage", ["-func=create", "-imgmode=vpc", "-hd=10M", "-q", made], {
          encoding: "utf8",
        });
        expect(c.status, c.stdout).toBe(0);
        expect(JSON.parse(qimg(["info", "--output=json", made]).stdout)).toEqual(
          JSON.parse(runOk("qemu-img", ["info", "--output=json", made])),
        );
        expect(JSON.parse(qimg(["info", "--output=json", img]).stdout)).toEqual(
          JSON.parse(runOk("qemu-img", ["info", "--output=json", img])),
        );
      }
    },
  );

  it.skipIf(!existsSync(SAMPLES))("sample VHDs read as qemu-img reads them; afl5.img is refused", () => {
    const vpcDyn = `${SAMPLES}/qemu-iotests/virtualpc-dynamic.vhd`;
    const bx = `${SAMPLES}/generated/bximage-vpc.vhd`;
    const d2v = t.path("d2v.vhd");
    runOk("sh", ["-c", `bzip2 -dc ${SAMPLES}/qemu-iotests/d2v-zerofilled.vhd.bz2 > ${d2v}`]);
    for (const img of [vpcDyn, bx, d2v]) {
      const q = JSON.parse(runOk("qemu-img", ["info", "-U", "--output=json", img]));
      expect(JSON.parse(qimg(["info", "-U", "--output=json", img]).stdout)).toEqual(q);
      expect(qimg(["map", "-U", "--output=json", img]).stdout).toBe(
        runOk("qemu-img", ["map", "-U", "--output=json", img]),
      );
    }
    for (const img of [bx, d2v]) {
      const out = t.path("sample.raw");
      expect(qimg(["convert", "-U", "-f", "vpc", "-O", "raw", img, out]).status).toBe(0);
      expect(sha(readFileSync(out))).toBe(sha(qemuBytes(img, "vpc")));
    }
    const r = qimg(["info", "-f", "vpc", `${SAMPLES}/qemu-iotests/afl5.img`]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Max Table Entries too large (1073741825)");
  });
});
