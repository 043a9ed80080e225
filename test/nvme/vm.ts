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
  /** The script's exit status (124 timeout, 3 VM not built). */
  rc: number;
  /** The script's stdout and stderr, and the serial console. */
  stdout: string;
  stderr: string;
  console: string;
  /** The transfer directory (guest /xfer). */
  xfer: string;
}

/** Boot once with `nvme` backing files and run the shell `script` (in `xfer`). */
export function runGuest(nvme: string[], script: string, xfer: string, timeoutS = 600): GuestRun {
  const path = join(xfer, "script.sh");
  writeFileSync(path, script);
  const args = [join(REPO, "test/vm/run.sh"), "--timeout", String(timeoutS)];
  for (const f of nvme) args.push("--nvme", f);
  args.push(path, xfer);
  const r = spawnSync("bash", args, { encoding: "utf8", timeout: (timeoutS + 60) * 1000 });
  const read = (n: string) => (existsSync(join(xfer, n)) ? readFileSync(join(xfer, n), "utf8") : "");
  return {
    rc: r.status ?? -1,
    stdout: read("stdout"),
    stderr: read("stderr"),
    console: read("console"),
    xfer,
  };
}
