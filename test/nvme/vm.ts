/**
 * Host side of the NVMe guest tests: boots test/vm/run.sh once with raw backing files as emulated
 * NVMe controllers (bound to vfio-pci in the guest) and runs one guest script. Skips with a
 * printed reason when qemu-system-x86_64, the Debian kernel or the built addon is missing.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (seen at the same path in the guest). */
export const REPO = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");

/** Why the guest cannot run here, or undefined when it can. */
export function vmSkipReason(): string | undefined {
  if (spawnSync("qemu-system-x86_64", ["--version"]).status !== 0) {
    return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
  }
  if (!readdirSync("/boot").some((f) => f.startsWith("vmlinuz-"))) {
    return "no Debian kernel in /boot (apt-get install linux-image-amd64)";
  }
  if (
    !existsSync(join(REPO, "dist/index.js")) ||
    !readdirSync(join(REPO, "native")).some((f) => f.endsWith(".node"))
  ) {
    return "qimg is not built (npm run build)";
  }
  return undefined;
}

/** What one boot produced. */
export interface GuestRun {
  /** The script's exit status (124 timeout, 3 VM not built or no result). */
  rc: number;
  /** Whether the guest script ran to its end (the guest stored its exit status). */
  finished: boolean;
  /** test/vm/run.sh's own messages (timeout, no result, VM not built) and how it ended. */
  host: string;
  /** The script's stdout and stderr, and the serial console. */
  stdout: string;
  stderr: string;
  console: string;
  /** The transfer directory (guest /xfer). */
  xfer: string;
}

/**
 * The guest's time limit in seconds: `timeoutS`, or QIMG_VM_TIMEOUT when set (a loaded machine
 * runs this TCG guest several times slower).
 */
export function guestTimeout(timeoutS: number): number {
  const env = Number(process.env.QIMG_VM_TIMEOUT);
  return Number.isFinite(env) && env > 0 ? env : timeoutS;
}

/** Boot once with `nvme` backing files and run the shell `script` (in `xfer`). */
export function runGuest(nvme: string[], script: string, xfer: string, timeoutS = 600): GuestRun {
  const limit = guestTimeout(timeoutS);
  const path = join(xfer, "script.sh");
  writeFileSync(path, script);
  const args = [join(REPO, "test/vm/run.sh"), "--timeout", String(limit)];
  for (const f of nvme) args.push("--nvme", f);
  args.push(path, xfer);
  const t0 = Date.now();
  const r = spawnSync("bash", args, { encoding: "utf8", timeout: (limit + 60) * 1000 });
  const secs = ((Date.now() - t0) / 1000).toFixed(0);
  const read = (n: string) => (existsSync(join(xfer, n)) ? readFileSync(join(xfer, n), "utf8") : "");
  const ended = r.error
    ? `run.sh did not finish: ${r.error.message}`
    : `run.sh exited ${r.status ?? `on signal ${r.signal}`}`;
  return {
    rc: r.status ?? -1,
    finished: existsSync(join(xfer, "rc")),
    host: `${ended} after ${secs} s (guest limit ${limit} s)\n${r.stderr ?? ""}`,
    stdout: read("stdout"),
    stderr: read("stderr"),
    console: read("console"),
    xfer,
  };
}

/**
 * Why the boot produced no result from the guest script (the VM did not build, did not boot,
 * timed out, or the guest died), with the host's messages and the end of the serial console;
 * undefined when the script ran to its end. Tests throw this from `beforeAll`, so a loaded
 * machine shows a reason on every test instead of failing them without one.
 */
export function harnessFailure(g: GuestRun): string | undefined {
  if (g.finished) return undefined;
  const hint =
    g.rc === 124
      ? "the guest timed out: on a loaded machine set QIMG_VM_TIMEOUT=<seconds> (TCG runs several times slower)"
      : "the guest ended without storing the script's exit status";
  const tail = (s: string, n: number) => s.trimEnd().split("\n").slice(-n).join("\n");
  return [
    `NVMe guest produced no result: ${hint}`,
    g.host.trimEnd(),
    `guest stderr (last lines):\n${tail(g.stderr, 15)}`,
    `serial console (last lines):\n${tail(g.console, 25)}`,
  ].join("\n");
}
