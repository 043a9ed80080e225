/**
 * Image locking against real QEMU, both ways: qimg refuses to write an image qemu-nbd serves
 * read-write; qemu-img refuses an image qimg holds open for writing unless given -U; and qimg's
 * -U (forceShare) succeeds where QEMU's would.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { create, info, open } from "../../ts/index.js";
import { hasPeer, run, tempDir } from "../helpers/peers.js";

const have = hasPeer("qemu-img") && hasPeer("qemu-nbd");
const t = tempDir();
afterAll(() => t.cleanup());

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting for qemu-nbd");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function serve(file: string, sock: string): Promise<ChildProcess> {
  const p = spawn("qemu-nbd", ["-k", sock, "-f", "qcow2", "--persistent", "--shared=4", file], {
    stdio: "ignore",
  });
  await waitFor(() => existsSync(sock) && readFileSync("/proc/locks", "utf8").includes("OFDLCK"));
  return p;
}

describe.skipIf(!have)("QEMU-compatible image locks", () => {
  it("qemu-img info fails on an image qimg holds for writing; -U succeeds", async () => {
    const file = t.path("held.qcow2");
    await create(file, { format: "qcow2", size: 1 << 20 });
    const img = await open(file, { format: "qcow2" });
    try {
      const r = run("qemu-img", ["info", file]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('Failed to get shared "write" lock');
      expect(r.stderr).toContain("Is another process using the image");
      const u = run("qemu-img", ["info", "-U", file]);
      expect(u.status).toBe(0);
    } finally {
      await img.close();
    }
    expect(run("qemu-img", ["info", file]).status).toBe(0);
  });

  it("qimg refuses to write an image qemu-nbd serves read-write; -U reads it", async () => {
    const file = t.path("served.qcow2");
    const sock = t.path("nbd.sock");
    await create(file, { format: "qcow2", size: 1 << 20 });
    const p = await serve(file, sock);
    try {
      const err = await open(file, { format: "qcow2" }).then(
        () => null,
        (e) => e,
      );
      expect(err?.code).toBe("ERR_QIMG_LOCKED");
      expect(err?.message).toMatch(/Failed to get "write" lock|Failed to get shared "write" lock/);
      const ro = await open(file, { format: "qcow2", readOnly: true }).then(
        () => null,
        (e) => e,
      );
      expect(ro?.code).toBe("ERR_QIMG_LOCKED");
      const [i] = await info(file, { forceShare: true });
      expect(i.format).toBe("qcow2");
      // Like qemu-img info without -U, qimg info refuses an image being written.
      await expect(info(file)).rejects.toMatchObject({ code: "ERR_QIMG_LOCKED" });
    } finally {
      p.kill("SIGTERM");
      await new Promise((r) => p.once("exit", r));
    }
    const img = await open(file, { format: "qcow2" });
    await img.close();
  });

  it("info takes qemu-img info's locks: none on raw, so it reads a raw image being written", async () => {
    const file = t.path("busy.raw");
    await create(file, { format: "raw", size: 1 << 20 });
    const img = await open(file, { format: "raw" });
    try {
      const [i] = await info(file, { format: "raw" });
      expect(i["virtual-size"]).toBe(1 << 20);
      expect(run("qemu-img", ["info", "-f", "raw", file]).status).toBe(0);
    } finally {
      await img.close();
    }
  });

  it("locking=off opens regardless", async () => {
    const file = t.path("off.qcow2");
    await create(file, { format: "qcow2", size: 1 << 20 });
    const a = await open(file, { format: "qcow2" });
    try {
      await expect(open(file, { format: "qcow2" })).rejects.toMatchObject({ code: "ERR_QIMG_LOCKED" });
      const b = await open(
        { driver: "qcow2", file: { driver: "file", filename: file, locking: "off" } },
        { readOnly: true },
      );
      await b.close();
    } finally {
      await a.close();
    }
  });
});
