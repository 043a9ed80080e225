/**
 * `amend -o encrypt.*` on qcow2 `encrypt.format=luks` images against qemu-img 10 (key slots
 * added/erased by qimg are honoured by qemu-img and the other way round; `qemu-img check` clean),
 * qemu-img's refusals, and encrypted (`keyid=`) secrets both ways (ciphertext made by openssl).
 */
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { hasPeer, qimg, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img");
const haveSsl = have && run("openssl", ["version"]).status === 0;
if (!haveSsl) console.warn("SKIP: openssl is not installed (apt-get install openssl); keyid tests skipped");
const t = tempDir("qimg-amendenc-");
afterAll(() => t.cleanup());
const OBJ = ["--object", "secret,id=s0,data=first-pass", "--object", "secret,id=s1,data=second-pass"];
const opts = (f: string, sec: string) => `driver=qcow2,file.filename=${f},encrypt.key-secret=${sec}`;

/** qemu-img create with retries (its PBKDF timing may fail on CPU accounting here). */
function qemuCreate(file: string, objs = OBJ, sec = "s0"): void {
  for (let i = 0; i < 5; i++) {
    const r = run("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      ...objs,
      "-o",
      `encrypt.format=luks,encrypt.key-secret=${sec},encrypt.iter-time=10`,
      file,
      "1M",
    ]);
    if (r.status === 0) return;
    if (!r.stderr.includes("CPU usage")) throw new Error(r.stderr);
  }
  throw new Error("qemu-img create kept failing");
}

/** qemu-img opens `f` with secret `sec` (reads every byte), and `check` is clean. */
function qemuOpens(f: string, sec: string): { status: number; stderr: string } {
  const r = run("qemu-img", ["check", ...OBJ, "--image-opts", opts(f, sec)]);
  if (r.status !== 0) return r;
  return run("qemu-img", ["convert", ...OBJ, "--image-opts", opts(f, sec), "-O", "raw", `${f}.${sec}.raw`]);
}

function slots(f: string): boolean[] {
  const info = JSON.parse(runOk("qemu-img", ["info", "--output=json", f]));
  return info["format-specific"].data.encrypt.slots.map((s: { active: boolean }) => s.active);
}

describe.skipIf(!have)("qcow2 amend encrypt.* against qemu-img", () => {
  it("qimg adds and erases key slots that qemu-img honours", () => {
    const f = t.path("a.qcow2");
    qemuCreate(f);
    // Some data, written by qemu-img with the first passphrase.
    runOk("qemu-io", [...OBJ, "--image-opts", opts(f, "s0"), "-c", "write -P 0x5a 0 64k"]);
    expect(qemuOpens(f, "s0").status).toBe(0);
    const add = qimg([
      "amend",
      ...OBJ,
      "--image-opts",
      opts(f, "s0"),
      "-o",
      "encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10",
    ]);
    expect(add.stderr).toBe("");
    expect(add.status).toBe(0);
    expect(slots(f).slice(0, 2)).toEqual([true, true]);
    expect(qemuOpens(f, "s1").status).toBe(0);
    // Same guest data through either passphrase (compared by qemu-img).
    expect(runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", `${f}.s0.raw`, `${f}.s1.raw`])).toContain(
      "identical",
    );
    // Erase the first passphrase's slot by password: qemu-img no longer opens with it.
    const del = qimg([
      "amend",
      ...OBJ,
      "--image-opts",
      opts(f, "s1"),
      "-o",
      "encrypt.state=inactive,encrypt.old-secret=s0",
    ]);
    expect(del.stderr).toBe("");
    expect(del.status).toBe(0);
    const old = qemuOpens(f, "s0");
    expect(old.status).not.toBe(0);
    expect(old.stderr).toContain("Invalid password");
    expect(qemuOpens(f, "s1").status).toBe(0);
    const io = runOk("qemu-io", [...OBJ, "--image-opts", opts(f, "s1"), "-c", "read -P 0x5a 0 64k"]);
    expect(io).not.toContain("Pattern verification failed");
  });

  it("opens and amends what qemu-img amended", () => {
    const f = t.path("b.qcow2");
    qemuCreate(f);
    runOk("qemu-img", [
      "amend",
      ...OBJ,
      "--image-opts",
      "-o",
      "encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=5,encrypt.iter-time=10",
      opts(f, "s0"),
    ]);
    runOk("qemu-img", [
      "amend",
      ...OBJ,
      "--image-opts",
      "-o",
      "encrypt.state=inactive,encrypt.keyslot=0",
      opts(f, "s1"),
    ]);
    const mine = qimg(["convert", ...OBJ, "--image-opts", opts(f, "s1"), "-O", "raw", t.path("b.raw")]);
    expect(mine.stderr).toBe("");
    expect(mine.status).toBe(0);
    runOk("qemu-io", [...OBJ, "--image-opts", opts(f, "s1"), "-c", "write -P 0x33 4k 8k"]);
    expect(qemuOpens(f, "s1").status).toBe(0);
    const again = qimg(["convert", ...OBJ, "--image-opts", opts(f, "s1"), "-O", "raw", t.path("b.raw")]);
    expect(again.status).toBe(0);
    const cmp = run("qemu-img", ["compare", "-f", "raw", "-F", "raw", t.path("b.raw"), `${f}.s1.raw`]);
    expect(cmp.stdout).toContain("identical");
    const bad = qimg(["convert", ...OBJ, "--image-opts", opts(f, "s0"), "-O", "raw", t.path("b0.raw")]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("Invalid password");
    // qimg then re-adds the first passphrase in slot 2, which qemu-img accepts.
    const add = qimg([
      "amend",
      ...OBJ,
      "--image-opts",
      opts(f, "s1"),
      "-o",
      "encrypt.state=active,encrypt.new-secret=s0,encrypt.keyslot=2,encrypt.iter-time=10",
    ]);
    expect(add.stderr).toBe("");
    expect(slots(f)).toEqual([false, false, true, false, false, true, false, false]);
    expect(qemuOpens(f, "s0").status).toBe(0);
  });

  it("refuses what qemu-img refuses, with its messages", () => {
    const f = t.path("c.qcow2");
    qemuCreate(f);
    const plain = t.path("plain.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", plain, "1M"]);
    const cases: Array<[string, string]> = [
      ["encrypt.new-secret=s1", f],
      ["encrypt.state=active,encrypt.keyslot=0,encrypt.new-secret=s1", f],
      ["encrypt.state=inactive,encrypt.keyslot=0", f],
      ["encrypt.state=inactive,encrypt.keyslot=9", f],
      ["encrypt.state=inactive,encrypt.old-secret=s1", f],
      ["encrypt.state=active,encrypt.new-secret=s1,encrypt.old-secret=s0", f],
      ["encrypt.state=inactive", f],
      ["encrypt.iter-time=x", f],
      ["encrypt.state=active,encrypt.new-secret=s1", plain],
    ];
    for (const [o, img] of cases) {
      const spec = img === f ? opts(f, "s0") : `driver=qcow2,file.filename=${img}`;
      const q = run("qemu-img", ["amend", ...OBJ, "--image-opts", "-o", o, spec]);
      const m = qimg(["amend", ...OBJ, "--image-opts", "-o", o, spec]);
      expect(q.status, o).toBe(1);
      expect(m.status, o).toBe(1);
      expect(m.stderr.replace(/^qimg:/, "qemu-img:"), o).toBe(q.stderr);
    }
    // The luks format shares the key slot code: same messages as qemu-img there too.
    const l = t.path("c.luks");
    runOk("qemu-img", [
      "convert",
      ...OBJ,
      "--image-opts",
      opts(f, "s0"),
      "-O",
      "luks",
      "-o",
      "key-secret=s0,iter-time=10",
      l,
    ]);
    const lspec = `driver=luks,file.filename=${l},key-secret=s0`;
    for (const o of [
      "new-secret=s1",
      "state=inactive,keyslot=-1",
      "state=inactive,keyslot=3",
      "state=inactive,old-secret=s0",
      "state=active",
      "state=inactive,new-secret=s1,keyslot=0",
    ]) {
      const q = run("qemu-img", ["amend", ...OBJ, "--image-opts", "-o", o, lspec]);
      const m = qimg(["amend", ...OBJ, "--image-opts", "-o", o, lspec]);
      expect(q.status, o).toBe(1);
      expect(m.status, o).toBe(1);
      expect(m.stderr.replace(/^qimg:/, "qemu-img:"), o).toBe(q.stderr);
    }
    expect(slots(f)[0]).toBe(true);
    // --force lets the last slot go, as in qemu-img.
    const forced = qimg([
      "amend",
      "--force",
      ...OBJ,
      "--image-opts",
      "-o",
      "encrypt.state=inactive,encrypt.keyslot=0",
      opts(f, "s0"),
    ]);
    expect(forced.status).toBe(0);
    expect(slots(f).every((a) => !a)).toBe(true);
  });
});

describe.skipIf(!haveSsl)("encrypted secrets (keyid=) against qemu-img", () => {
  const key = createHash("sha256").update("master").digest();
  const iv = createHash("md5").update("iv").digest();
  const keyObj = ["--object", `secret,id=k0,data=${key.toString("base64")},format=base64`];
  const encObj = (id: string, plain: string) => {
    const enc = run("sh", [
      "-c",
      `openssl enc -aes-256-cbc -K ${key.toString("hex")} -iv ${iv.toString("hex")} -in '${writeTmp(plain)}' | openssl base64 -A`,
    ]).stdout.trim();
    expect(enc.length).toBeGreaterThan(0);
    return ["--object", `secret,id=${id},data=${enc},keyid=k0,iv=${iv.toString("base64")},format=base64`];
  };
  let n = 0;
  function writeTmp(s: string): string {
    const p = t.path(`plain${n++}`);
    writeFileSync(p, s);
    return p;
  }

  it("opens qemu-img's image created with a keyid secret, and qemu-img opens qimg's", () => {
    const sec = [...keyObj, ...encObj("sx", "very-secret")];
    const a = t.path("q.qcow2");
    qemuCreate(a, sec, "sx");
    const plainObj = ["--object", "secret,id=sp,data=very-secret"];
    const m = qimg([
      "check",
      ...sec,
      "--image-opts",
      `driver=qcow2,file.filename=${a},encrypt.key-secret=sx`,
    ]);
    expect(m.stderr).toBe("");
    expect(m.status).toBe(0);
    // Same passphrase in clear opens it in qimg too; a wrong one does not.
    expect(
      qimg(["check", ...plainObj, "--image-opts", `driver=qcow2,file.filename=${a},encrypt.key-secret=sp`])
        .status,
    ).toBe(0);
    const b = t.path("m.qcow2");
    const c = qimg([
      "create",
      "-q",
      "-f",
      "qcow2",
      ...sec,
      "-o",
      "encrypt.format=luks,encrypt.key-secret=sx,encrypt.iter-time=10",
      b,
      "1M",
    ]);
    expect(c.stderr).toBe("");
    expect(
      run("qemu-img", [
        "check",
        ...plainObj,
        "--image-opts",
        `driver=qcow2,file.filename=${b},encrypt.key-secret=sp`,
      ]).status,
    ).toBe(0);
    expect(
      run("qemu-img", [
        "check",
        ...sec,
        "--image-opts",
        `driver=qcow2,file.filename=${b},encrypt.key-secret=sx`,
      ]).status,
    ).toBe(0);
    const wrong = ["--object", "secret,id=sw,data=other"];
    expect(
      run("qemu-img", [
        "check",
        ...wrong,
        "--image-opts",
        `driver=qcow2,file.filename=${b},encrypt.key-secret=sw`,
      ]).status,
    ).toBe(1);
  });

  it("gives qemu-img's errors for bad encrypted secrets", () => {
    const cases = [
      ["--object", `secret,id=sx,data=AAAA,keyid=k0,iv=${iv.toString("base64")},format=base64`],
      ["--object", "secret,id=sx,data=AAAAAAAAAAAAAAAAAAAAAA==,keyid=k0,iv=AAAA,format=base64"],
      ["--object", "secret,id=sx,data=AAAAAAAAAAAAAAAAAAAAAA==,keyid=k0,format=base64"],
    ];
    const img = t.path("e.qcow2");
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", img, "1M"]);
    for (const c of cases) {
      const q = run("qemu-img", ["info", ...keyObj, ...c, img]);
      const m = qimg(["info", ...keyObj, ...c, img]);
      expect(q.status).toBe(1);
      expect(m.status).toBe(1);
      expect(m.stderr.replace(/^qimg:/, "qemu-img:")).toBe(q.stderr);
    }
  });
});
