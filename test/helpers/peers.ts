/**
 * Test helpers for the real peers (qemu-img, qemu-io, qemu-nbd): presence checks that print a
 * reason when a peer is missing, runners, and temporary directories.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
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

/** Path of Debian bookworm's qemu tool `cmd` 7.2 unpacked by test/peers/install.sh, or null (printed). */
export function qemu72(cmd: "qemu-img" | "qemu-io"): string | null {
  const p = fileURLToPath(new URL(`../../target/peers/qemu-7.2/usr/bin/${cmd}`, import.meta.url));
  const r = spawnSync(p, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0 || !r.stdout.includes("version 7.2")) {
    console.warn(`SKIP: ${cmd} 7.2 is not unpacked under target/peers (run test/peers/install.sh as root)`);
    return null;
  }
  return p;
}

/** True if the independent reader `tool` (7zz, or python3 with pyqcow) is present; prints why not. */
export function hasReader(tool: "7zz" | "pyqcow"): boolean {
  const r =
    tool === "7zz"
      ? spawnSync("7zz", ["i"], { encoding: "utf8" })
      : spawnSync("/usr/bin/python3", ["-c", "import pyqcow"], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    console.warn(`SKIP: ${tool === "7zz" ? "7zz (apt 7zip)" : "python3-libqcow"} is not installed`);
    return false;
  }
  return true;
}

/** sha256 of a qcow2 image's guest contents as an independent reader decodes them. */
export function readerSha256(tool: "7zz" | "pyqcow", image: string): string {
  if (tool === "7zz") {
    const r = spawnSync("7zz", ["e", "-so", "-tQCOW", image], { maxBuffer: 1 << 30 });
    if (r.status !== 0) throw new Error(`7zz failed on ${image}: ${r.stderr}`);
    return createHash("sha256").update(r.stdout).digest("hex");
  }
  const py =
    "import hashlib,sys,pyqcow\nf=pyqcow.file();f.open(sys.argv[1])\nh=hashlib.sha256();n=f.get_media_size();o=0\n" +
    "while o<n:\n  b=f.read_buffer(min(1<<20,n-o));h.update(b);o+=len(b)\nprint(h.hexdigest())";
  return runOk("/usr/bin/python3", ["-c", py, image]).trim();
}

/**
 * Start a server that listens on the Unix socket `sock` and wait (at most 10 s) until the socket
 * exists; the process is added to `servers` so the test file can kill it afterwards.
 */
export async function startOnSocket(
  cmd: string,
  args: string[],
  sock: string,
  servers: ChildProcess[],
): Promise<ChildProcess> {
  const p = spawn(cmd, args, { stdio: "ignore" });
  servers.push(p);
  const t0 = Date.now();
  while (!existsSync(sock)) {
    if (Date.now() - t0 > 10_000) throw new Error(`${cmd} did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}
