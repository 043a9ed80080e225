/**
 * Secrets and legacy AES encryption (qcow v1 and qcow2 `encrypt.format=aes`) against qemu-img and
 * qemu-io: images QEMU writes read back identically through qimg, images qimg writes pass
 * `qemu-img check` and `compare` with the secret given to QEMU through `--object` and
 * `--image-opts`; `info` and `map` match; missing or mismatched keys give qemu-img's messages and
 * exit codes; the secret's text never shows in any output.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { open, parseObjects } from "../../ts/index.js";
import { hasPeer, qemu72, qimg, type RunResult, run, runOk, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-io");
const t = tempDir("qimg-enclegacy-");
afterAll(() => t.cleanup());

/** A passphrase no output may ever contain. */
const PASS = "Tr0ub4dor-&3-horse";
const OBJ = `secret,id=sec0,data=${PASS}`;
const SIZE = 4 << 20;
/** Every result seen, checked at the end for the passphrase. */
const seen: RunResult[] = [];

function q(args: string[]): RunResult {
  const r = run("qemu-img", args);
  seen.push(r);
  return r;
}
function m(args: string[]): RunResult {
  const r = qimg(args);
  seen.push(r);
  return r;
}
const opts = (fmt: string, file: string, extra = "") =>
  `driver=${fmt},file.filename=${file},encrypt.key-secret=sec0${extra}`;
/** An error line without the tool's name. */
const msg = (r: RunResult) => r.stderr.replace(/^(qemu-img|qimg): /, "").trim();

/** Raw source: patterned data, a zero run, and an unaligned tail run. */
function source(): Buffer {
  const b = Buffer.alloc(SIZE);
  for (let i = 0; i < 200_000; i++) b[i] = (i * 13 + 7) % 251;
  b.fill(0x5a, (1 << 20) + 300, (1 << 20) + 70_000);
  b.fill(0xc3, SIZE - 5000, SIZE - 17);
  return b;
}

describe.skipIf(!have)("legacy AES encryption with qemu-img", () => {
  const src = t.path("src.raw");
  writeFileSync(src, source());

  for (const fmt of ["qcow", "qcow2"]) {
    it(`${fmt}: qemu-img writes, qimg reads the same bytes`, () => {
      const img = t.path(`qemu.${fmt}`);
      expect(
        q([
          "convert",
          "--object",
          OBJ,
          "-O",
          fmt,
          "-o",
          "encrypt.format=aes,encrypt.key-secret=sec0",
          src,
          img,
        ]).status,
      ).toBe(0);
      // Unaligned writes by qemu-io too (read-modify-write of encrypted sectors).
      const io = run("qemu-io", [
        "--object",
        OBJ,
        "--image-opts",
        opts(fmt, img),
        "-c",
        "write -P 0x77 1000 3333",
      ]);
      expect(io.status, io.stderr).toBe(0);
      const out = t.path(`qemu.${fmt}.qimg.raw`);
      const r = m(["convert", "--object", OBJ, "--image-opts", opts(fmt, img), "-O", "raw", out]);
      expect(r.status, r.stderr).toBe(0);
      const ref = t.path(`qemu.${fmt}.ref.raw`);
      runOk("qemu-img", ["convert", "--object", OBJ, "--image-opts", opts(fmt, img), "-O", "raw", ref]);
      expect(readFileSync(out).equals(readFileSync(ref))).toBe(true);
      const want = source();
      want.fill(0x77, 1000, 4333);
      expect(readFileSync(out).equals(want)).toBe(true);
    });

    it(`${fmt}: qimg writes (convert and unaligned writes), qemu-img checks and compares`, async () => {
      const img = t.path(`qimg.${fmt}`);
      const c = m([
        "convert",
        "--object",
        OBJ,
        "-O",
        fmt,
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        src,
        img,
      ]);
      expect(c.status, c.stderr).toBe(0);
      // The data on disk is not the plaintext.
      expect(readFileSync(img).includes(source().subarray(0, 4096))).toBe(false);
      const objects = parseObjects([OBJ]);
      if (!Array.isArray(objects)) throw new Error("help");
      const h = await open({ driver: fmt, file: img, "encrypt.key-secret": "sec0" }, { objects });
      await h.write(777, Buffer.alloc(2000, 0x42));
      await h.write(SIZE - 513, Buffer.alloc(513, 0x24));
      expect((await h.read(700, 100)).subarray(77)).toEqual(Buffer.alloc(23, 0x42));
      await h.close();
      const want = source();
      want.fill(0x42, 777, 2777);
      want.fill(0x24, SIZE - 513, SIZE);
      const wantFile = t.path(`want.${fmt}.raw`);
      writeFileSync(wantFile, want);
      const cmp = q([
        "compare",
        "--object",
        OBJ,
        "--image-opts",
        `driver=raw,file.filename=${wantFile}`,
        opts(fmt, img),
      ]);
      expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      const mine = m([
        "compare",
        "--object",
        OBJ,
        "--image-opts",
        `driver=raw,file.filename=${wantFile}`,
        opts(fmt, img),
      ]);
      expect(mine.status, mine.stderr).toBe(0);
      if (fmt === "qcow2") {
        const chk = q(["check", "--object", OBJ, "--image-opts", opts(fmt, img)]);
        expect(chk.status, chk.stdout + chk.stderr).toBe(0);
        const mchk = m(["check", "--object", OBJ, "--image-opts", opts(fmt, img)]);
        expect(mchk.status, mchk.stderr).toBe(0);
      }
    });

    it(`${fmt}: create gives qemu-img's header, info and map match`, () => {
      const a = t.path(`c-qimg.${fmt}`);
      const b = t.path(`c-qemu.${fmt}`);
      for (const [tool, f] of [
        [m, a],
        [q, b],
      ] as const) {
        const r = tool([
          "create",
          "-q",
          "-f",
          fmt,
          "--object",
          OBJ,
          "-o",
          "encryption=on,encrypt.key-secret=sec0",
          f,
          "1M",
        ]);
        expect(r.status, r.stderr).toBe(0);
      }
      // crypt_method: qcow at byte 36, qcow2 at byte 32.
      const at = fmt === "qcow" ? 36 : 32;
      expect(readFileSync(a).readUInt32BE(at)).toBe(1);
      expect(readFileSync(a).subarray(0, 48)).toEqual(readFileSync(b).subarray(0, 48));
      for (const f of [b, t.path(`qimg.${fmt}`)]) {
        expect(m(["info", f]).stdout).toBe(q(["info", f]).stdout);
        expect(JSON.parse(m(["info", "--output=json", f]).stdout)).toEqual(
          JSON.parse(q(["info", "--output=json", f]).stdout),
        );
        const mapArgs = ["map", "--output=json", "--object", OBJ, "--image-opts", opts(fmt, f)];
        expect(m(mapArgs).stdout).toBe(q(mapArgs).stdout);
      }
      // The human map cannot show encrypted clusters: same message and exit code.
      const hm = ["map", "--object", OBJ, "--image-opts", opts(fmt, t.path(`qimg.${fmt}`))];
      const [mm, qm] = [m(hm), q(hm)];
      expect(mm.status).toBe(qm.status);
      expect(msg(mm)).toBe(msg(qm));
    });

    it(`${fmt}: no key, wrong format, unknown secret: qemu-img's messages and exit codes`, () => {
      const img = t.path(`qemu.${fmt}`);
      const cases: string[][] = [
        ["convert", "-O", "raw", img, t.path("x.raw")],
        ["check", img],
        ["map", img],
        ["compare", img, img],
        [
          "convert",
          "--image-opts",
          `driver=${fmt},file.filename=${img},encrypt.format=luks`,
          "-O",
          "raw",
          t.path("x.raw"),
        ],
        ["info", "--image-opts", `driver=${fmt},file.filename=${img},encrypt.format=luks`],
        [
          "convert",
          "--object",
          OBJ,
          "--image-opts",
          `driver=${fmt},file.filename=${img},encrypt.key-secret=nope`,
          "-O",
          "raw",
          t.path("x.raw"),
        ],
        ["create", "-f", fmt, "-o", "encrypt.format=aes", t.path("y.img"), "1M"],
        [
          "create",
          "-f",
          fmt,
          "--object",
          OBJ,
          "-o",
          "encrypt.format=aes,encrypt.key-secret=zz",
          t.path("y.img"),
          "1M",
        ],
        [
          "create",
          "-f",
          fmt,
          "--object",
          OBJ,
          "-o",
          "encryption=on,encrypt.format=aes,encrypt.key-secret=sec0",
          t.path("y.img"),
          "1M",
        ],
        ["create", "-f", fmt, "--object", OBJ, "-o", "encrypt.key-secret=sec0", t.path("y.img"), "1M"],
        [
          "create",
          "-f",
          fmt,
          "--object",
          "secret,id=sec0,data=%%%,format=base64",
          "-o",
          "encrypt.format=aes,encrypt.key-secret=sec0",
          t.path("y.img"),
          "1M",
        ],
        [
          "create",
          "-f",
          fmt,
          "--object",
          `secret,id=sec0,file=${t.path("no-such-file")}`,
          "-o",
          "encrypt.format=aes,encrypt.key-secret=sec0",
          t.path("y.img"),
          "1M",
        ],
        [
          "convert",
          "--object",
          OBJ,
          "-c",
          "-O",
          fmt,
          "-o",
          "encrypt.format=aes,encrypt.key-secret=sec0",
          src,
          t.path("z.img"),
        ],
      ];
      if (fmt === "qcow2") {
        const plain = t.path("plain.qcow2");
        runOk("qemu-img", ["create", "-q", "-f", "qcow2", plain, "1M"]);
        cases.push(
          ["info", "--image-opts", `driver=qcow2,file.filename=${plain},encrypt.format=aes`],
          [
            "create",
            "-f",
            fmt,
            "--object",
            OBJ,
            "-o",
            "encrypt.format=aes,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-256",
            t.path("y.img"),
            "1M",
          ],
          [
            "create",
            "-f",
            fmt,
            "--object",
            OBJ,
            "-o",
            "encrypt.format=foo,encrypt.key-secret=sec0",
            t.path("y.img"),
            "1M",
          ],
        );
      } else {
        cases.push([
          "create",
          "-f",
          fmt,
          "--object",
          OBJ,
          "-o",
          "encrypt.format=luks,encrypt.key-secret=sec0",
          t.path("y.img"),
          "1M",
        ]);
      }
      for (const args of cases) {
        const [qr, mr] = [q(args), m(args)];
        expect(mr.status, `${args.join(" ")}: ${mr.stderr}`).toBe(qr.status);
        expect(qr.status).not.toBe(0);
        // qemu-img may print the 'Formatting' line first; the error line must match, except
        // that with --image-opts qemu-img quotes the whole option string, qimg the file name.
        const unquote = (s: string | undefined) =>
          s?.replace(/^Could not open '[^']*'/, "Could not open 'X'");
        // qimg may print its legacy AES warning first.
        const last = (r: RunResult) =>
          msg(r)
            .split("\n")
            .pop()
            ?.replace(/^qimg: /, "");
        expect(unquote(last(mr)), args.join(" ")).toBe(unquote(last(qr)));
      }
    });

    it(`${fmt}: creating an AES image warns (QEMU's emulators refuse them), reading does not`, () => {
      const r = m([
        "create",
        "-f",
        fmt,
        "--object",
        OBJ,
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        t.path("w.img"),
        "1M",
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        /^qimg: warning: AES-CBC encrypted .* no longer supported by QEMU's system emulators/,
      );
      const rd = m([
        "convert",
        "--object",
        OBJ,
        "--image-opts",
        opts(fmt, t.path("w.img")),
        "-O",
        "raw",
        t.path("w.raw"),
      ]);
      expect(rd.status, rd.stderr).toBe(0);
      expect(rd.stderr).toBe("");
    });

    it(`${fmt}: a wrong passphrase cannot be detected (legacy AES has no key check): data differs`, () => {
      const img = t.path(`qemu.${fmt}`);
      const out = t.path(`wrong.${fmt}.raw`);
      const r = m([
        "convert",
        "--object",
        "secret,id=sec0,data=not-the-pass",
        "--image-opts",
        opts(fmt, img),
        "-O",
        "raw",
        out,
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(out).subarray(0, 65536).equals(source().subarray(0, 65536))).toBe(false);
    });
  }

  it("info of an encrypted image with a backing file: qemu-img's exact JSON text and human lines", () => {
    const base = t.path("bbase.raw");
    writeFileSync(base, Buffer.alloc(1 << 20));
    for (const fmt of ["qcow", "qcow2"]) {
      const f = t.path(`bk.${fmt}`);
      const c = q([
        "create",
        "-q",
        "-f",
        fmt,
        "--object",
        OBJ,
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        "-b",
        base,
        "-F",
        "raw",
        f,
      ]);
      expect(c.status, c.stderr).toBe(0);
      expect(m(["info", "--output=json", f]).stdout).toBe(q(["info", "--output=json", f]).stdout);
      expect(m(["info", f]).stdout).toBe(q(["info", f]).stdout);
    }
  });

  it("qemu-img 7.2 creates aes qcow2 and qcow as 10 does; qimg reads what 7.2 writes", () => {
    const q72 = qemu72("qemu-img");
    if (!q72) return;
    for (const fmt of ["qcow", "qcow2"]) {
      const img = t.path(`q72.${fmt}`);
      const r = run(q72, [
        "convert",
        "--object",
        OBJ,
        "-O",
        fmt,
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        src,
        img,
      ]);
      seen.push(r);
      expect(r.status, r.stderr).toBe(0);
      const out = t.path(`q72.${fmt}.raw`);
      const c = m(["convert", "--object", OBJ, "--image-opts", opts(fmt, img), "-O", "raw", out]);
      expect(c.status, c.stderr).toBe(0);
      expect(readFileSync(out).equals(source())).toBe(true);
    }
  });

  it("the secret's text never appears in any output", () => {
    expect(seen.length).toBeGreaterThan(20);
    for (const r of seen) {
      expect(r.stdout).not.toContain(PASS);
      expect(r.stderr).not.toContain(PASS);
    }
    // Nor in a keyval error about the secret object itself.
    const bad = m(["info", "--object", `secret,id=sec0,data=${PASS},bogus`, src]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).not.toContain(PASS);
  });
});
