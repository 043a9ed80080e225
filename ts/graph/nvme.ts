/**
 * NVMe addresses as QEMU takes them: `nvme://DDDD:BB:SS.F/NS` and the options form
 * (`file.driver=nvme`, `file.device=DDDD:BB:SS.F`, `file.namespace=NS`, default 1). The controller
 * must be bound to vfio-pci; qimg drives it from userspace (crates/qimg-nvme).
 */
import { QimgError } from "../errors.js";

/** Which namespace of which controller. */
export interface NvmeTarget {
  /** PCI address `DDDD:BB:SS.F`. */
  device: string;
  /** Namespace ID (1-based). */
  namespace: number;
}

const BDF = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;

const bad = (spec: string, why: string): never => {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid NVMe address '${spec}': ${why}`, { path: spec });
};

function checkTarget(spec: string, device: string, ns: string): NvmeTarget {
  if (!BDF.test(device)) bad(spec, `'${device}' is not a PCI address DDDD:BB:SS.F`);
  if (!/^\d+$/.test(ns) || Number(ns) < 1 || Number(ns) > 0xfffffffe) bad(spec, `bad namespace '${ns}'`);
  return { device: device.toLowerCase(), namespace: Number(ns) };
}

/** True if `spec` is an `nvme://` address. */
export function isNvmeString(spec: string): boolean {
  return /^nvme:\/\//i.test(spec);
}

/** Parse `nvme://DDDD:BB:SS.F/NS`. */
export function parseNvmeString(spec: string): NvmeTarget {
  const rest = spec.replace(/^nvme:\/\//i, "");
  const slash = rest.indexOf("/");
  if (slash < 0) bad(spec, "Namespace id is missing in filename");
  return checkTarget(spec, rest.slice(0, slash), rest.slice(slash + 1));
}

/** The options form: `file` of an image spec with `driver: "nvme"`. */
export function parseNvmeOptions(file: Record<string, unknown>): NvmeTarget {
  const device = file.device;
  if (typeof device !== "string" || device === "") bad("file.device", "missing PCI address");
  const ns = file.namespace === undefined ? "1" : String(file.namespace);
  return checkTarget(`file.device=${device}`, device as string, ns);
}

/** The canonical `nvme://` name of a target (used in messages and `info`). */
export function nvmeFilename(t: NvmeTarget): string {
  return `nvme://${t.device}/${t.namespace}`;
}
