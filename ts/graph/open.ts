/**
 * `open()`: build the node graph for an image — format over the file protocol, then the backing
 * chain through the implicit-open gate, each layer read-only below the top.
 */
import { QimgError } from "../errors.js";
import { Image } from "../image.js";
import { callNative, type NativeImage, native } from "../native.js";
import { parseJsonFilename } from "../options/json.js";
import type { QomObject } from "../options/object.js";
import { resolveKeySecret } from "../options/secrets.js";
import { getFormat, probeFormat } from "../registry/index.js";
import { attachExtents } from "./extents.js";
import { admitImplicit, type ImplicitPolicy } from "./gate.js";
import { PROBE_BYTES, probeFile } from "./probe.js";
import { type ImageOptions, type NodeSpec, normalizeSpec } from "./spec.js";
import { resolveTls } from "./tls.js";

/** Options of {@link open}. */
export interface OpenOptions {
  /** Format of the top image (`-f`); probed when absent. Always honoured. */
  format?: string;
  /** Open read-only (default false). */
  readOnly?: boolean;
  /** `-U`: share every permission with other users (read-only only). */
  forceShare?: boolean;
  /** `file.locking` for every layer. */
  locking?: "on" | "off" | "auto";
  /**
   * Cache mode of every layer's host file (`-t`/`-T`): `writeback` (default), `none`/`off`
   * (O_DIRECT), `writethrough` (O_DSYNC), `directsync` (both), `unsafe` (drivers' flushes
   * dropped; closing still flushes).
   */
  cache?: string;
  /** Do not open the backing chain (`backing: null`). */
  noBacking?: boolean;
  /** Which implicit references to follow (default `files`; `none` for untrusted images). */
  implicit?: ImplicitPolicy;
  /** Longest backing chain accepted (default 64). */
  maxChainDepth?: number;
  /**
   * Backing layers to open read-write, by chain index (0 is the top, governed by `readOnly`):
   * `commit` writes into its base this way.
   */
  writableLayers?: readonly number[];
  /** `info`: lock like `qemu-img info` (metadata only) instead of like a reader. */
  purpose?: "info";
  /** Objects (`secret`s) for `key-secret` / `encrypt.key-secret`; default: the CLI's `--object`s. */
  objects?: readonly QomObject[];
  /** Secret id for the top image's encryption when its spec names none (convert's target). */
  keySecret?: string;
  /**
   * Abort the open: key derivation of an encrypted image (PBKDF2/Argon2, up to a minute on a
   * hostile header) stops and the open rejects with `ERR_QIMG_ABORTED`. Default: the signal set
   * by {@link setDefaultSignal} (the CLI's SIGINT), if any.
   */
  signal?: AbortSignal;
}

let defaultSignal: AbortSignal | undefined;

/** The signal used by opens that pass none (the CLI sets its SIGINT signal here). */
export function setDefaultSignal(signal: AbortSignal | undefined): void {
  defaultSignal = signal;
}

function aborted(signal: AbortSignal): QimgError {
  return new QimgError("ERR_QIMG_ABORTED", "The operation was aborted", { cause: signal.reason });
}

const parseJson = (s: string) => parseJsonFilename(s) as ImageOptions;

/** Normalize a spec (filename, `json:` string or options object). */
export function toNodeSpec(spec: string | ImageOptions): NodeSpec {
  return normalizeSpec(spec, parseJson);
}

async function openNode(
  node: NodeSpec,
  readOnly: boolean,
  opts: OpenOptions,
  explicitFormat?: string,
): Promise<NativeImage> {
  let format = explicitFormat ?? node.format;
  const nbd = node.nbd
    ? {
        serverType: node.nbd.serverType,
        host: node.nbd.host,
        port: node.nbd.port,
        path: node.nbd.path,
        export: node.nbd.export,
        // `info` reads a few headers: one connection, unless multi-conn was asked for.
        connections: node.nbd.multiConn ?? (opts.purpose === "info" ? 1 : undefined),
        tls:
          node.nbd.tlsCreds === undefined ? undefined : resolveTls(node.nbd.tlsCreds, node.nbd.tlsHostname),
      }
    : undefined;
  const nvme = node.nvme ? { device: node.nvme.device, namespace: node.nvme.namespace } : undefined;
  if (format === "nbd") {
    // `-f nbd` / `driver=nbd`: the export itself, read as raw (info reports it as `nbd`).
    if (!nbd) {
      throw new QimgError(
        "ERR_QIMG_INVALID_ARGUMENT",
        `Could not open '${node.filename}': File name string for NBD must start with 'nbd:'`,
        { path: node.filename },
      );
    }
    format = "raw";
  }
  if (!format && (nbd || nvme)) {
    // Probe over the protocol: the export's first bytes through a raw node.
    const raw = await callNative(() =>
      // One connection is enough to read the first bytes.
      native.openImage({
        filename: node.filename,
        format: "raw",
        readOnly: true,
        nbd: nbd && { ...nbd, connections: 1 },
        nvme,
      }),
    );
    try {
      const head = Buffer.alloc(Math.min(PROBE_BYTES, raw.virtualSize));
      await callNative(() => raw.read(0, head));
      format = probeFormat(head, node.filename);
    } finally {
      await callNative(() => raw.close());
    }
  }
  if (!format) {
    format = await probeFile(node.filename);
    if (format === "raw" && !readOnly) {
      throw new QimgError(
        "ERR_QIMG_INVALID_ARGUMENT",
        `Image format was not specified for '${node.filename}' and probing guessed raw. ` +
          "Automatically detecting the format is dangerous for raw images, write operations on block 0 " +
          "will be restricted. Specify the 'raw' format explicitly to remove the restrictions.",
        { path: node.filename },
      );
    }
  }
  getFormat(format);
  let encryptionKey: Buffer | undefined;
  const signal = opts.signal ?? defaultSignal;
  if (signal?.aborted) throw aborted(signal);
  // Only encrypted opens derive keys (seconds of work): they get a native cancel flag.
  const cancel = signal && node.keySecret !== undefined ? new native.CancelFlag() : undefined;
  const onAbort = () => cancel?.cancel();
  if (cancel) signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (node.keySecret !== undefined) encryptionKey = resolveKeySecret(opts.objects, node.keySecret);
    // As QEMU: only `info` (its no-I/O open) may open a luks image without its secret.
    else if (format === "luks" && opts.purpose !== "info")
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "Parameter 'key-secret' is required for cipher");
    return await callNative(() =>
      native.openImage(
        {
          filename: node.filename,
          format: format as string,
          readOnly,
          locking: node.locking ?? opts.locking,
          forceShare: node.forceShare ?? opts.forceShare ?? false,
          purpose: opts.purpose,
          cache: nvme ? undefined : opts.cache,
          nbd,
          nvme,
          encryptionKey,
          encryptFormat: node.encryptFormat,
        },
        cancel,
      ),
    );
  } catch (e) {
    throw openError(e, node.filename);
  } finally {
    encryptionKey?.fill(0);
    if (cancel) signal?.removeEventListener("abort", onAbort);
  }
}

/** QEMU's `Could not open 'F': …` around the encryption errors it words that way. */
function openError(e: unknown, filename: string): unknown {
  if (!(e instanceof QimgError) || e.message.startsWith("Could not open")) return e;
  if (
    !/^(No secret with id|Data from secret|No encryption in image header|Parameter '(encrypt\.)?key-secret'|Header reported|Invalid password|Unable to read)/.test(
      e.message,
    )
  )
    return e;
  return new QimgError(e.code, `Could not open '${filename}': ${e.message}`, { path: filename, cause: e });
}

/**
 * A qcow2 node with an external data file (`data_file`): open the file it names, through the
 * implicit-open gate, as a raw node in the node's own mode and attach it. `info` never gets here.
 */
async function attachDataFile(
  n: NativeImage,
  filename: string,
  readOnly: boolean,
  opts: OpenOptions,
  attached: NativeImage[],
): Promise<void> {
  if (n.format !== "qcow2") return;
  const info = await callNative(() => n.info());
  const specific = info.formatSpecificJson ? JSON.parse(info.formatSpecificJson) : undefined;
  const name: unknown = specific?.data?.["data-file"];
  if (typeof name !== "string") return;
  const path = admitImplicit(name, filename, opts.implicit ?? "files", "data file", "cwd");
  const data = await callNative(() =>
    native.openImage({
      filename: path,
      format: "raw",
      readOnly,
      locking: opts.locking,
      forceShare: opts.forceShare ?? false,
      cache: opts.cache,
    }),
  );
  attached.push(data);
  await callNative(() => native.attachDataFile(n, data));
}

/** Open an image and its backing chain. */
export async function open(spec: string | ImageOptions, opts: OpenOptions = {}): Promise<Image> {
  const top = toNodeSpec(spec);
  if (opts.keySecret !== undefined && top.keySecret === undefined) top.keySecret = opts.keySecret;
  const readOnly = top.readOnly ?? opts.readOnly ?? false;
  if (opts.forceShare && !readOnly) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "force-share=on can only be used with read-only images");
  }
  const maxDepth = opts.maxChainDepth ?? 64;
  const chain: NativeImage[] = [];
  const names: string[] = [];
  const attached: NativeImage[] = [];
  try {
    let node: NodeSpec | null | undefined = top;
    let fmt = opts.format;
    let ro = readOnly;
    while (node) {
      if (chain.length > maxDepth) {
        throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Backing chain is longer than ${maxDepth} images`, {
          path: top.filename,
        });
      }
      const n = await openNode(node, ro, opts, fmt);
      if (chain.length > 0) chain[chain.length - 1].setBacking(n);
      chain.push(n);
      names.push(node.filename);
      if (opts.purpose !== "info") await attachDataFile(n, node.filename, ro, opts, attached);
      await attachExtents(n, node.filename, ro, opts, attached);
      ro = !opts.writableLayers?.includes(chain.length);
      fmt = undefined;
      if (opts.noBacking || node.backing === null) break;
      if (node.backing) {
        node = node.backing;
        continue;
      }
      const info = await callNative(() => n.info());
      if (!info.backingFile) break;
      const filename = admitImplicit(info.backingFile, node.filename, opts.implicit ?? "files");
      if (names.includes(filename)) {
        throw new QimgError("ERR_QIMG_CORRUPT", `Backing chain loops back to '${filename}'`, {
          path: node.filename,
        });
      }
      const extra: NodeSpec | undefined = node.backingOptions;
      node = filename.startsWith("json:") ? toNodeSpec(filename) : { filename };
      if (extra) node = { ...extra, ...node, format: extra.format ?? node.format };
      if (info.backingFormat && !node.format) node.format = info.backingFormat;
    }
  } catch (e) {
    for (const n of [...chain, ...attached]) await n.close().catch(() => undefined);
    throw e;
  }
  return new Image(chain, names, readOnly, attached);
}
