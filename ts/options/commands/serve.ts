/**
 * `qimg serve` (qemu-nbd's server options): `-f -x -r -k/--socket -b/--bind -p/--port
 * -t/--persistent -e/--shared -D/--description --image-opts --object --tls-creds`.
 */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { COMMON_LONG, fail, type ImageArg, imageArg, imageOptsExclusive } from "./common.js";

/** qemu-nbd's options that `serve` takes (its letters and long names). */
export const SERVE_SPEC: OptionSpec = {
  short: {
    f: true,
    x: true,
    r: false,
    k: true,
    b: true,
    p: true,
    t: false,
    e: true,
    D: true,
    A: false,
    h: false,
  },
  long: {
    ...COMMON_LONG,
    format: [true, "f"],
    "export-name": [true, "x"],
    "read-only": [false, "r"],
    socket: [true, "k"],
    bind: [true, "b"],
    port: [true, "p"],
    persistent: [false, "t"],
    shared: [true, "e"],
    description: [true, "D"],
    "image-opts": [false, "image-opts"],
    "tls-creds": [true, "tls-creds"],
    "pid-file": [true, "pid-file"],
    "allocation-depth": [false, "A"],
  },
};

/** Server TLS credentials from a `--object tls-creds-*` (QEMU's `dir`, `verify-peer`). */
export interface ServeTls {
  /** `psk` (`keys.psk`) or `x509` (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`). */
  type: "psk" | "x509";
  /** The credentials directory. */
  dir: string;
  /** x509: require a client certificate (QEMU's `verify-peer`, default on). */
  verifyPeer: boolean;
}

const BOOL: Record<string, boolean> = {
  on: true,
  yes: true,
  true: true,
  off: false,
  no: false,
  false: false,
};

/** Resolve `--tls-creds ID` against the `--object` list, with qemu-nbd's messages. */
export function tlsFromObjects(id: string, objects: readonly QomObject[]): ServeTls {
  const o = objects.find((x) => x.id === id);
  if (!o) fail(`Failed to get TLS creds: No TLS credentials with id '${id}'`);
  if (o.qomType !== "tls-creds-psk" && o.qomType !== "tls-creds-x509") {
    fail(`Failed to get TLS creds: Object with id '${id}' is not TLS credentials`);
  }
  const { dir, endpoint } = o.props;
  if ((endpoint ?? "client") !== "server")
    fail("Failed to get TLS creds: Expecting TLS credentials with a server endpoint");
  if (typeof dir !== "string" || dir === "")
    fail(`Failed to get TLS creds: TLS credentials '${id}' have no 'dir'`);
  const vp = o.props["verify-peer"];
  let verifyPeer = true;
  if (vp !== undefined) {
    if (typeof vp !== "string" || !(vp in BOOL)) fail(`Parameter 'verify-peer' expects 'on' or 'off'`);
    verifyPeer = BOOL[vp];
  }
  return { type: o.qomType === "tls-creds-psk" ? "psk" : "x509", dir, verifyPeer };
}

/** A parsed `serve`. */
export interface ServeCommand {
  cmd: "serve";
  /** The filename (or `--image-opts` text) as given. */
  filename: string;
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `--image-opts`. */
  imageOpts: boolean;
  /** `-x` (default ""). */
  exportName: string;
  /** `-D`. */
  description?: string;
  /** `-r`. */
  readOnly: boolean;
  /** `-k`: serve on this Unix socket. */
  socket?: string;
  /** `-b` (default `0.0.0.0`). */
  bind: string;
  /** `-p` (default 10809; 0 lets the OS choose and prints the port). */
  port: number;
  /** `-t`. */
  persistent: boolean;
  /** `-e` (default 1; 0 = no limit). */
  shared: number;
  /** `--tls-creds`: the server credentials of the named `tls-creds-psk`/`tls-creds-x509` object. */
  tls?: ServeTls;
  /** `-A`: offer the `qemu:allocation-depth` metadata context. */
  allocationDepth: boolean;
  /** `--pid-file`: written once serving, removed at exit. */
  pidFile?: string;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a serve command from parsed arguments (qemu-nbd's messages). */
export function buildServe(p: ParsedArgs, objects: QomObject[]): ServeCommand {
  const port = last(p, "p");
  let portNum = 10809;
  if (port !== undefined) {
    portNum = /^[0-9]+$/.test(port) ? Number(port) : Number.NaN;
    if (!(portNum >= 0 && portNum <= 65535)) fail(`Invalid port number '${port}'`);
  }
  const e = last(p, "e");
  let shared = 1;
  if (e !== undefined) {
    shared = /^[0-9]+$/.test(e) ? Number(e) : Number.NaN;
    if (!(shared >= 0 && shared <= 0xffffffff)) fail(`Invalid shared device number '${e}'`);
  }
  if (p.positionals.length !== 1) fail("Invalid number of arguments");
  const filename = p.positionals[0];
  imageOptsExclusive(p);
  const imageOpts = has(p, "image-opts");
  const exportName = last(p, "x") ?? "";
  if (Buffer.byteLength(exportName) > 4096) fail("Export name is too long (at most 4096 bytes)");
  const c: ServeCommand = {
    cmd: "serve",
    filename,
    image: imageArg(filename, imageOpts),
    imageOpts,
    exportName,
    readOnly: has(p, "r"),
    bind: last(p, "b") ?? "0.0.0.0",
    port: portNum,
    persistent: has(p, "t"),
    shared,
    allocationDepth: has(p, "A"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  const k = last(p, "k");
  if (k !== undefined) c.socket = k;
  const d = last(p, "D");
  if (d !== undefined) c.description = d;
  const pf = last(p, "pid-file");
  if (pf !== undefined) c.pidFile = pf;
  const t = last(p, "tls-creds");
  if (t !== undefined) c.tls = tlsFromObjects(t, objects);
  return c;
}
