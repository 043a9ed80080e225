/**
 * Cancelling key derivation: a LUKS image (and a qcow2 with LUKS encryption), made by qimg, whose
 * key slot 0 is patched to 20,000,000 PBKDF2 iterations (the accepted maximum, several seconds
 * of work). An `AbortSignal` fired 200 ms into `open()` must reject it with `ERR_QIMG_ABORTED`
 * well before the derivation could have finished; an already-aborted signal rejects at once; and
 * SIGINT stops the CLI during the derivation (exit 1, no waiting for the PBKDF).
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { amend, commit, open, parseObjects } from "../../ts/index.js";
import { QIMG, qimg, tempDir } from "../helpers/peers.js";

const t = tempDir("qimg-luks-abort-");
afterAll(() => t.cleanup());
const OBJ = "secret,id=sec0,data=hunter2";
const objects = parseObjects([OBJ]);
/** The accepted maximum (crates/qimg-crypto/src/work.rs): seconds of PBKDF2-SHA256. */
const HOSTILE_ITERATIONS = 20_000_000;
/** "Well under" the derivation: it takes several seconds at that count even on a fast core. */
const PROMPT_MS = 2_000;

/** Patch key slot 0 of the (first) LUKS1 header in `file` to `iterations`. */
function patchIterations(file: string, iterations: number): void {
  const b = readFileSync(file);
  const at = b.indexOf(Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]));
  expect(at).toBeGreaterThanOrEqual(0);
  // LUKS1 key slot 0 at header + 208: active (0x00AC71F3), iterations (u32 BE), …
  expect(b.readUInt32BE(at + 208)).toBe(0x00ac71f3);
  expect(b.readUInt32BE(at + 212)).toBeLessThan(iterations);
  b.writeUInt32BE(iterations, at + 212);
  writeFileSync(file, b);
}

function makeImages(): { luks: string; qcow2: string } {
  const luks = t.path("hostile.luks");
  const qcow2 = t.path("hostile.qcow2");
  let r = qimg([
    "create",
    "-q",
    "-f",
    "luks",
    "--object",
    OBJ,
    "-o",
    "key-secret=sec0,iter-time=10",
    luks,
    "1M",
  ]);
  expect(r.stderr).toBe("");
  r = qimg([
    "create",
    "-q",
    "-f",
    "qcow2",
    "--object",
    OBJ,
    "-o",
    "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
    qcow2,
    "1M",
  ]);
  expect(r.stderr).toBe("");
  patchIterations(luks, HOSTILE_ITERATIONS);
  patchIterations(qcow2, HOSTILE_ITERATIONS);
  return { luks, qcow2 };
}

describe("AbortSignal stops key derivation", () => {
  const imgs = makeImages();
  const specs = {
    luks: { driver: "luks", file: imgs.luks, "key-secret": "sec0" },
    qcow2: { driver: "qcow2", file: imgs.qcow2, "encrypt.key-secret": "sec0" },
  };

  for (const [name, spec] of Object.entries(specs)) {
    it(`${name}: abort after 200 ms rejects with ERR_QIMG_ABORTED promptly`, async () => {
      const ac = new AbortController();
      const started = Date.now();
      setTimeout(() => ac.abort(), 200);
      const err = await open(spec, {
        readOnly: true,
        objects: Array.isArray(objects) ? objects : [],
        signal: ac.signal,
      }).then(
        async (img) => {
          await img.close();
          return null;
        },
        (e: unknown) => e as { code?: string; message?: string },
      );
      const elapsed = Date.now() - started;
      expect(err, "open must fail").not.toBeNull();
      expect(err?.code, String(err?.message)).toBe("ERR_QIMG_ABORTED");
      expect(elapsed).toBeGreaterThanOrEqual(190);
      expect(elapsed).toBeLessThan(200 + PROMPT_MS);
    });
  }

  it("commit and amend pass their signal to the open: abort after 200 ms rejects promptly", async () => {
    const objs = Array.isArray(objects) ? objects : [];
    for (const run of [
      (signal: AbortSignal) => commit(specs.qcow2, { objects: objs, signal }),
      (signal: AbortSignal) =>
        amend(specs.luks, { state: "active", "new-secret": "sec0" }, { objects: objs, signal }),
    ]) {
      const ac = new AbortController();
      const started = Date.now();
      setTimeout(() => ac.abort(), 200);
      const err = await Promise.resolve(run(ac.signal)).then(
        () => null,
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect(err, "must fail").not.toBeNull();
      expect(err?.code, String(err?.message)).toBe("ERR_QIMG_ABORTED");
      expect(Date.now() - started).toBeLessThan(200 + PROMPT_MS);
    }
  });

  it("an already-aborted signal rejects before any work", async () => {
    const ac = new AbortController();
    ac.abort();
    const started = Date.now();
    await expect(
      open(specs.luks, { readOnly: true, objects: Array.isArray(objects) ? objects : [], signal: ac.signal }),
    ).rejects.toMatchObject({ code: "ERR_QIMG_ABORTED" });
    expect(Date.now() - started).toBeLessThan(PROMPT_MS);
  });

  it("SIGINT stops the CLI during the derivation", async () => {
    const img = imgs.luks;
    const child = spawn(process.execPath, [
      QIMG,
      "convert",
      "--object",
      OBJ,
      "--image-opts",
      `driver=luks,key-secret=sec0,file.filename=${img}`,
      "-O",
      "raw",
      t.path("out.raw"),
    ]);
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    // Let node start and the derivation begin (it then runs for seconds).
    await new Promise((r) => setTimeout(r, 1000));
    const sent = Date.now();
    child.kill("SIGINT");
    const [code, signal] = await new Promise<[number | null, string | null]>((r) =>
      child.on("exit", (c, s) => r([c, s])),
    );
    expect(signal, stderr).toBeNull();
    expect(code, stderr).toBe(1);
    expect(stderr).toMatch(/cancel|abort/i);
    expect(stderr).not.toContain("hunter2");
    expect(Date.now() - sent).toBeLessThan(PROMPT_MS);
  });
});
