/**
 * Test helpers for the real peers (qemu-img, qemu-io, qemu-nbd): presence checks that print a
 * reason when a peer is missing, runners, and temporary directories.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** True if `cmd` runs; otherwise prints why dependent tests skip. */
export function hasPeer(cmd: string): boolean {
  const r = spawnSync(cmd, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    console.warn(
      `SKIP: ${cmd} is not installed (apt-get install qemu-utils); tests that need it are skipped`,
    );
    return false;
  }
  return true;
}

/** Result of a peer command. */
export interface RunResult {
  /** Exit status. */
  status: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Run a command; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], opts: { input?: string } = {}): RunResult {
  const r = spawnSync(cmd, args, { encoding: "utf8", input: opts.input, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Run a command that must succeed; returns stdout. */
export function runOk(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
}

/** A fresh temporary directory and its cleanup. */
export function tempDir(prefix = "qimg-test-"): {
  dir: string;
  path: (n: string) => string;
  cleanup: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (n) => join(dir, n), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** sha256 of a file or buffer. */
export function sha256(data: Buffer | string): string {
  return createHash("sha256")
    .update(typeof data === "string" ? readFileSync(data) : data)
    .digest("hex");
}

/** The raw decode of an image by qemu-img (`convert -O raw`), as a buffer. */
export function qemuDecode(image: string, format: string, out: string): Buffer {
  runOk("qemu-img", ["convert", "-U", "-f", format, "-O", "raw", image, out]);
  return readFileSync(out);
}

/** `qemu-img check --output=json`: exit status and parsed JSON. */
export function qemuCheck(
  image: string,
  format = "qcow2",
): { status: number; json: Record<string, unknown> } {
  const r = run("qemu-img", ["check", "--output=json", "-f", format, image]);
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = { parseError: r.stdout + r.stderr };
  }
  return { status: r.status, json };
}

/** The path of the qimg CLI (built by `npm run build`). */
export const QIMG = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

/** Run the qimg CLI. */
export function qimg(args: string[]): RunResult {
  return run(process.execPath, [QIMG, ...args]);
}
