/**
 * NBD addresses as QEMU takes them: `nbd://host[:port]/export`, `nbd+tcp://…`,
 * `nbd+unix:///export?socket=PATH`, the legacy `nbd:HOST:PORT[:exportname=NAME]` and
 * `nbd:unix:PATH[:exportname=NAME]`, and the options form (`file.driver=nbd`,
 * `file.server.type=inet|unix`, `file.server.host`, `file.server.port`, `file.server.path`,
 * `file.export`), with TLS named by `tls-creds` / `tls-hostname` (options, or as a qimg extension
 * the URI query: qemu-img 10 rejects URIs with a query other than `socket`). `multi-conn=N`
 * (options or URI query; a qimg extension, QEMU's NBD client has no such option) sets how many
 * connections to open when the server advertises multi-conn (default 4, 1 for one).
 */
import { QimgError } from "../errors.js";

/** Where an NBD export is. */
export interface NbdTarget {
  /** `inet` (TCP) or `unix`. */
  serverType: "inet" | "unix";
  /** Host (inet). */
  host?: string;
  /** Port (inet; default 10809). */
  port?: number;
  /** Socket path (unix). */
  path?: string;
  /** Export name ("" is the default export). */
  export: string;
  /** ID of the `tls-creds-*` object to use (TLS required when set). */
  tlsCreds?: string;
  /** Name the server's certificate must carry (x509). */
  tlsHostname?: string;
  /** Connections when the server allows several (`multi-conn`, 1..16; default 4). */
  multiConn?: number;
}

/** Most connections `multi-conn` may ask for. */
export const MAX_MULTI_CONN = 16;

function withMultiConn(t: NbdTarget, v: unknown): NbdTarget {
  if (v === undefined || v === null) return t;
  const s = String(v);
  const n = Number(s);
  if (!/^\d+$/.test(s) || n < 1 || n > MAX_MULTI_CONN) {
    throw new QimgError(
      "ERR_QIMG_INVALID_ARGUMENT",
      `Parameter 'multi-conn' expects an integer between 1 and ${MAX_MULTI_CONN}, got '${s}'`,
    );
  }
  t.multiConn = n;
  return t;
}

function withTls(t: NbdTarget, creds: string | null | undefined, host: string | null | undefined): NbdTarget {
  if (creds !== undefined && creds !== null) t.tlsCreds = creds;
  if (host !== undefined && host !== null) t.tlsHostname = host;
  if (t.tlsHostname !== undefined && t.tlsCreds === undefined) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", "tls-hostname is only valid with tls-creds");
  }
  return t;
}

const bad = (spec: string, why: string): never => {
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid NBD address '${spec}': ${why}`, { path: spec });
};

function port(spec: string, p: string | undefined): number | undefined {
  if (p === undefined || p === "") return undefined;
  if (!/^\d+$/.test(p) || Number(p) > 65535) bad(spec, `bad port '${p}'`);
  return Number(p);
}

/** True if `spec` is an NBD address string. */
export function isNbdString(spec: string): boolean {
  return /^nbd(\+tcp|\+unix)?:\/\//i.test(spec) || /^nbd:/i.test(spec);
}

/** Parse an NBD URI or legacy `nbd:` string. */
export function parseNbdString(spec: string): NbdTarget {
  const uri = /^(nbd(?:\+tcp|\+unix)?):\/\/([^/?]*)(\/[^?]*)?(?:\?(.*))?$/i.exec(spec);
  if (uri) {
    const scheme = uri[1].toLowerCase();
    const authority = uri[2];
    const exportName = decodeURIComponent((uri[3] ?? "").replace(/^\//, ""));
    const query = new URLSearchParams(uri[4] ?? "");
    for (const k of query.keys()) {
      if (!["socket", "tls-creds", "tls-hostname", "multi-conn"].includes(k))
        bad(spec, `unknown parameter '${k}'`);
    }
    const tc = query.get("tls-creds");
    const th = query.get("tls-hostname");
    const mc = query.get("multi-conn");
    if (scheme === "nbd+unix") {
      if (authority !== "") bad(spec, "a unix URI has no host");
      const socket = query.get("socket");
      if (!socket) bad(spec, "missing 'socket' parameter");
      return withMultiConn(
        withTls({ serverType: "unix", path: socket as string, export: exportName }, tc, th),
        mc,
      );
    }
    if (query.has("socket")) bad(spec, "'socket' is only for nbd+unix");
    const m = /^(\[[^\]]+\]|[^:]*)(?::(.*))?$/.exec(authority) as RegExpExecArray;
    const host = m[1].replace(/^\[|\]$/g, "") || "localhost";
    return withMultiConn(
      withTls({ serverType: "inet", host, port: port(spec, m[2]), export: exportName }, tc, th),
      mc,
    );
  }
  // Legacy: nbd:unix:PATH[:exportname=NAME] or nbd:HOST:PORT[:exportname=NAME].
  const rest = spec.replace(/^nbd:/i, "");
  let exportName = "";
  const parts = rest.split(":");
  const last = parts[parts.length - 1];
  if (parts.length > 1 && last.startsWith("exportname=")) {
    exportName = last.slice("exportname=".length);
    parts.pop();
  }
  if (parts[0] === "unix") {
    const path = parts.slice(1).join(":");
    if (!path) bad(spec, "missing socket path");
    return { serverType: "unix", path, export: exportName };
  }
  if (parts.length !== 2) bad(spec, "expected nbd:HOST:PORT");
  return {
    serverType: "inet",
    host: parts[0],
    port: port(spec, parts[1]) ?? bad(spec, "missing port"),
    export: exportName,
  };
}

/** The options form: `file` of an image spec with `driver: "nbd"`. */
export function parseNbdOptions(file: Record<string, unknown>): NbdTarget {
  const server = (file.server ?? {}) as Record<string, unknown>;
  const str = (v: unknown) => (v === undefined || v === null ? undefined : String(v));
  const type = str(server.type) ?? (file.path !== undefined ? "unix" : "inet");
  const exportName = str(file.export) ?? "";
  const tc = str(file["tls-creds"]);
  const th = str(file["tls-hostname"]);
  const mc = file["multi-conn"];
  if (type === "unix") {
    const path = str(server.path) ?? str(file.path);
    if (!path) bad("file.server.path", "missing socket path");
    return withMultiConn(
      withTls({ serverType: "unix", path: path as string, export: exportName }, tc, th),
      mc,
    );
  }
  if (type !== "inet") bad(`file.server.type=${type}`, "server type must be inet or unix");
  const host = str(server.host) ?? str(file.host);
  if (!host) bad("file.server.host", "missing host");
  return withMultiConn(
    withTls(
      {
        serverType: "inet",
        host: host as string,
        port: port("file.server.port", str(server.port) ?? str(file.port)),
        export: exportName,
      },
      tc,
      th,
    ),
    mc,
  );
}

/**
 * The name QEMU gives an NBD node (its `refresh_filename`): `nbd+unix:///EXPORT?socket=PATH`
 * (`nbd+unix://?socket=PATH` for the default export), `nbd://HOST:PORT/EXPORT` (port 10809 when
 * none was given; IPv6 hosts bracketed; no `/` for the default export).
 */
export function nbdFilename(t: NbdTarget): string {
  if (t.serverType === "unix") {
    return t.export ? `nbd+unix:///${t.export}?socket=${t.path}` : `nbd+unix://?socket=${t.path}`;
  }
  const host = (t.host ?? "").includes(":") ? `[${t.host}]` : t.host;
  const base = `nbd://${host}:${t.port ?? 10809}`;
  return t.export ? `${base}/${t.export}` : base;
}
