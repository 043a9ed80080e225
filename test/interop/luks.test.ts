/**
 * luks through the CLI against qemu-img 10 and cryptsetup: `create -o help`, create with
 * QEMU's options (qemu-img reads the data back, `cryptsetup open --test-passphrase` accepts
 * it), `info` human and JSON equal to qemu-img's, `convert` luks → raw and raw → luks both
 * ways with qemu-img, probing, a wrong passphrase (exit 1, QEMU's message, the secret never
 * echoed), `amend` keyslot add/erase checked by qemu-img, and LUKS2 (which QEMU refuses) read.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qemu72, qimg, run, runOk, sha256, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const haveCs = hasPeer("cryptsetup");
const t = tempDir("qimg-luks-");
afterAll(() => t.cleanup());
const SAMPLES = fileURLToPath(new URL("../../../shared/samples/generated", import.meta.url));
const PASS = "hunter2";
const OBJ = ["--object", `secret,id=sec0,data=${PASS}`];
const imageOpts = (f: string, sec = "sec0") => `driver=luks,key-secret=${sec},file.filename=${f}`;

function payload(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = ((i * 2654435761) >>> 16) ^ seed;
  return b;
}

/** qemu-img create with retries (its PBKDF timing may fail on CPU accounting here). */
function qemuCreate(file: string, opts: string, size: string): void {
  for (let i = 0; i < 5; i++) {
    const r = run("qemu-img", [
      "create",
      "-q",
      "-f",
      "luks",
      ...OBJ,
      "-o",
      `key-secret=sec0,iter-time=10${opts}`,
      file,
      size,
    ]);
    if (r.status === 0) return;
    if (!r.stderr.includes("CPU usage")) throw new Error(r.stderr);
  }
  throw new Error("qemu-img create kept failing");
}

describe.skipIf(!have)("luks against qemu-img", () => {
  it("lists qemu-img's create options", () => {
    const q = runOk("qemu-img", ["create", "-f", "luks", "-o", "help"]);
    const m = qimg(["create", "-f", "luks", "-o", "help"]);
    expect(m.status).toBe(0);
    expect(m.stdout).toBe(q);
  });

  it("creates images qemu-img reads, with the same info", () => {
    for (const opts of [
      "",
      ",cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1",
    ]) {
      const img = t.path(`c${opts.length}.luks`);
      const r = qimg([
        "create",
        "-q",
        "-f",
        "luks",
        ...OBJ,
        "-o",
        `key-secret=sec0,iter-time=10${opts}`,
        img,
        "3M",
      ]);
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const raw = t.path("p.raw");
      const data = payload(3 << 20, 5);
      data.fill(0, 1 << 20, 2 << 20); // a zero run: must be written encrypted, not skipped
      writeFileSync(raw, data);
      // qimg writes (convert creates the target with the same options), qemu-img reads.
      const w = qimg([
        "convert",
        ...OBJ,
        "-f",
        "raw",
        raw,
        "-O",
        "luks",
        "-o",
        `key-secret=sec0,iter-time=10${opts}`,
        img,
      ]);
      expect(w.stderr).toBe("");
      expect(w.status).toBe(0);
      runOk("qemu-img", [
        "compare",
        ...OBJ,
        "--image-opts",
        imageOpts(img),
        `driver=raw,file.filename=${raw}`,
      ]);
      // info, human and JSON, equal to qemu-img's.
      expect(qimg(["info", img]).stdout).toBe(runOk("qemu-img", ["info", img]));
      const qj = JSON.parse(runOk("qemu-img", ["info", "--output=json", img]));
      const mj = JSON.parse(qimg(["info", "--output=json", img]).stdout);
      expect(mj).toEqual(qj);
      expect(Object.keys(mj)).toEqual(Object.keys(qj));
      expect(Object.keys(mj["format-specific"].data)).toEqual(Object.keys(qj["format-specific"].data));
      if (haveCs) {
        const key = t.path("key");
        writeFileSync(key, PASS);
        runOk("cryptsetup", ["open", "--test-passphrase", "--key-file", key, img]);
      }
    }
  });

  it("converts luks → raw and raw → luks with images qemu-img made", () => {
    const img = t.path("q.luks");
    qemuCreate(img, ",cipher-alg=aes-256,cipher-mode=xts", "2M");
    const raw = t.path("q.raw");
    writeFileSync(raw, payload(2 << 20, 9));
    runOk("qemu-img", ["convert", "-n", ...OBJ, "-f", "raw", raw, "--target-image-opts", imageOpts(img)]);
    const out = t.path("out.raw");
    const c = qimg(["convert", ...OBJ, "--image-opts", imageOpts(img), "-O", "raw", out]);
    expect(c.stderr).toBe("");
    expect(sha256(readFileSync(out))).toBe(sha256(readFileSync(raw)));
    // raw → new luks file (create through convert -o).
    const dst = t.path("dst.luks");
    const d = qimg([
      "convert",
      ...OBJ,
      "-f",
      "raw",
      raw,
      "-O",
      "luks",
      "-o",
      "key-secret=sec0,iter-time=10",
      dst,
    ]);
    expect(d.stderr).toBe("");
    expect(d.status).toBe(0);
    runOk("qemu-img", ["compare", ...OBJ, "--image-opts", imageOpts(dst), `driver=raw,file.filename=${raw}`]);
  });

  it("maps like qemu-img, and qemu-img 7.2 reads qimg's images", () => {
    const img = t.path("m.luks");
    const raw = t.path("m.raw");
    writeFileSync(raw, payload(1 << 20, 1));
    const c = qimg([
      "convert",
      ...OBJ,
      "-f",
      "raw",
      raw,
      "-O",
      "luks",
      "-o",
      "key-secret=sec0,iter-time=10",
      img,
    ]);
    expect(c.status).toBe(0);
    const args = ["map", "--output=json", ...OBJ, "--image-opts", imageOpts(img)];
    expect(JSON.parse(qimg(args).stdout)).toEqual(JSON.parse(runOk("qemu-img", args)));
    const q72 = qemu72("qemu-img");
    if (q72) {
      runOk(q72, ["compare", ...OBJ, "--image-opts", imageOpts(img), `driver=raw,file.filename=${raw}`]);
    }
  });

  it("needs the secret for everything but info, as qemu-img", () => {
    const img = t.path("m.luks");
    for (const args of [
      ["check", img],
      ["map", "--output=json", img],
    ]) {
      const m = qimg(args);
      const q = run("qemu-img", args);
      expect(m.status).toBe(q.status);
      expect(m.stderr.replace(/^qimg:/, "")).toBe(q.stderr.replace(/^qemu-img:/, ""));
    }
    const withKey = ["check", ...OBJ, "--image-opts", imageOpts(img)];
    expect(qimg(withKey).status).toBe(run("qemu-img", withKey).status);
  });

  it("refuses a wrong passphrase with exit 1 and never echoes it", () => {
    const img = t.path("q.luks");
    const secret = "s3cr3t-never-printed";
    const r = qimg([
      "convert",
      "--object",
      `secret,id=bad,data=${secret}`,
      "--image-opts",
      imageOpts(img, "bad"),
      "-O",
      "raw",
      t.path("x.raw"),
    ]);
    const q = run("qemu-img", [
      "convert",
      "--object",
      `secret,id=bad,data=${secret}`,
      "--image-opts",
      imageOpts(img, "bad"),
      "-O",
      "raw",
      t.path("y.raw"),
    ]);
    expect(r.status).toBe(1);
    expect(q.status).toBe(1);
    expect(r.stderr).toContain("Invalid password, cannot unlock any keyslot");
    expect(r.stderr).not.toContain(secret);
    expect(r.stdout).not.toContain(secret);
  });

  it("probes luks and adds/erases key slots with amend", () => {
    const img = t.path("a.luks");
    qemuCreate(img, "", "1M");
    const probed = JSON.parse(qimg(["info", "--output=json", img]).stdout);
    expect(probed.format).toBe("luks");
    const objs = [...OBJ, "--object", "secret,id=sec1,data=second"];
    const add = qimg([
      "amend",
      ...objs,
      "--image-opts",
      imageOpts(img),
      "-o",
      "state=active,new-secret=sec1,keyslot=3,iter-time=10",
    ]);
    expect(add.stderr).toBe("");
    expect(add.status).toBe(0);
    // qemu-img opens it with the new passphrase.
    runOk("qemu-img", ["map", "--output=json", ...objs, "--image-opts", imageOpts(img, "sec1")]);
    const slots = JSON.parse(runOk("qemu-img", ["info", "--output=json", img]))["format-specific"].data.slots;
    expect(slots[3].active).toBe(true);
    // Erase slot 0: the old passphrase stops working, the new one still does.
    const del = qimg([
      "amend",
      ...objs,
      "--image-opts",
      imageOpts(img, "sec1"),
      "-o",
      "state=inactive,keyslot=0",
    ]);
    expect(del.stderr).toBe("");
    const q = run("qemu-img", ["map", "--output=json", ...objs, "--image-opts", imageOpts(img)]);
    expect(q.status).toBe(1);
    expect(q.stderr).toContain("Invalid password");
    // Erasing the last slot is refused, as QEMU does.
    const last = qimg([
      "amend",
      ...objs,
      "--image-opts",
      imageOpts(img, "sec1"),
      "-o",
      "state=inactive,keyslot=3",
    ]);
    expect(last.status).toBe(1);
    expect(last.stderr).toContain("only active keyslot");
  });
});

describe.skipIf(!existsSync(`${SAMPLES}/key.txt`))("LUKS2 (beyond QEMU)", () => {
  it("reads cryptsetup's LUKS2 sample that qemu-img refuses", () => {
    const img = `${SAMPLES}/cryptsetup-luks2-negative.img`;
    const out = t.path("l2.raw");
    const r = qimg([
      "convert",
      "--object",
      `secret,id=sec0,file=${SAMPLES}/key.txt`,
      "--image-opts",
      imageOpts(img),
      "-O",
      "raw",
      out,
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const info = JSON.parse(qimg(["info", "--output=json", img]).stdout);
    expect(info.format).toBe("luks");
    expect(info["format-specific"].data.version).toBe(2);
    expect(readFileSync(out).length).toBe(info["virtual-size"]);
  });

  it("falls back to the secondary LUKS2 header when the primary is corrupt, as cryptsetup", () => {
    const img = `${SAMPLES}/cryptsetup-luks2-negative.img`;
    const convert = (from: string, to: string) =>
      qimg([
        "convert",
        "--object",
        `secret,id=sec0,file=${SAMPLES}/key.txt`,
        "--image-opts",
        imageOpts(from),
        "-O",
        "raw",
        to,
      ]);
    const good = t.path("l2-good.raw");
    expect(convert(img, good).status).toBe(0);
    const b = readFileSync(img);
    const hdr = Number(b.readBigUInt64BE(8));
    b[4096 + 100] ^= 0x55; // primary JSON: its checksum fails
    const bad = t.path("l2-bad-primary.img");
    writeFileSync(bad, b);
    const out = t.path("l2-bad.raw");
    const r = convert(bad, out);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(sha256(readFileSync(out))).toBe(sha256(readFileSync(good)));
    // Both copies corrupt: refused with the checksum error, exit 1.
    b[hdr + 4096 + 100] ^= 0x55;
    writeFileSync(bad, b);
    const e = convert(bad, t.path("l2-none.raw"));
    expect(e.status).toBe(1);
    expect(e.stderr).toContain("checksum");
  });
});
