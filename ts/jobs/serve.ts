/**
 * `serve()`: export an image over NBD (qemu-nbd's role). The server runs on Rust threads; this
 * module opens the image (any format, any backing chain, with its locks), starts the server,
 * and on stop flushes and closes the image so the locks are released.
 */
import { QimgError } from "../errors.js";
import { type OpenOptions, open } from "../graph/open.js";
import type { ImageOptions } from "../graph/spec.js";
import { Image } from "../image.js";
import { callNative, type NativeServer, native, unwrapNativeError } from "../native.js";

/** Server TLS credentials, as QEMU's `tls-creds-psk` / `tls-creds-x509` objects lay them out. */
export interface ServeTls {
  /** `psk`: `dir/keys.psk` (`user:hexkey` lines, any user may connect); `x509`: certificates. */
  type: "psk" | "x509";
  /** The directory: `keys.psk`, or `ca-cert.pem`, `server-cert.pem`, `server-key.pem`. */
  dir: string;
  /** x509: require a client certificate signed by `ca-cert.pem` (default true, as QEMU). */
  verifyPeer?: boolean;
}

/** Options of {@link serve}; defaults are qemu-nbd's. */
export interface ServeOptions extends Pick<OpenOptions, "format" | "locking"> {
  /** Listen on this Unix socket (`--socket`) instead of TCP. */
  socket?: string;
  /** TCP address to bind (`--bind`, default `0.0.0.0`). */
  bind?: string;
  /** TCP port (`--port`, default 10809; 0 lets the OS choose, see {@link NbdServer.port}). */
  port?: number;
  /** Export name (`-x`, default ""). */
  exportName?: string;
  /** Export description (`-D`). */
  description?: string;
  /** Refuse writes (`-r`); default: writable unless the image was opened read-only. */
  readOnly?: boolean;
  /** Clients served at once (`--shared`, default 1; 0 for no limit). */
  shared?: number;
  /** Keep serving after the last client leaves (`--persistent`, default false). */
  persistent?: boolean;
  /** Require TLS (`--tls-creds`): clients must upgrade with STARTTLS before anything else. */
  tls?: ServeTls;
  /** Offer the `qemu:allocation-depth` metadata context (`-A`, default false). */
  allocationDepth?: boolean;
}

/** A running NBD server. */
export class NbdServer implements AsyncDisposable {
  readonly #native: NativeServer;
  readonly #image: Image;
  readonly #ownsImage: boolean;
  readonly #exportName: string;
  readonly #host: string;
  readonly #tls: boolean;
  #closing?: Promise<void>;
  /**
   * Settles once the server has stopped — by {@link close}, or by itself when the last client
   * left and it is not persistent — after the final flush and (for an image `serve` opened) the
   * image's close. Rejects if that flush or close failed.
   */
  readonly closed: Promise<void>;

  /** @internal Use `serve()`. */
  constructor(
    n: NativeServer,
    stopped: Promise<string>,
    image: Image,
    ownsImage: boolean,
    exportName: string,
    host: string,
    tls: boolean,
  ) {
    this.#native = n;
    this.#image = image;
    this.#ownsImage = ownsImage;
    this.#exportName = exportName;
    this.#host = host;
    this.#tls = tls;
    this.closed = this.#finish(stopped);
    // A stop the caller never awaits must not become an unhandled rejection.
    this.closed.catch(() => {});
  }

  async #finish(stopped: Promise<string>): Promise<void> {
    let first: unknown;
    const err = await stopped;
    if (err) first = unwrapNativeError(new Error(err));
    if (this.#ownsImage) {
      try {
        await this.#image.close();
      } catch (e) {
        first ??= e;
      }
    }
    if (first) throw first;
  }

  /** The TCP port listened on (`undefined` on a Unix socket). */
  get port(): number | undefined {
    return this.#native.port ?? undefined;
  }

  /** The Unix socket path listened on (`undefined` on TCP). */
  get socketPath(): string | undefined {
    return this.#native.socketPath ?? undefined;
  }

  /** Clients connected now. */
  get connections(): number {
    return this.#native.connections;
  }

  /**
   * The export's URI as QEMU and libnbd spell it (`nbd://host:port/name`,
   * `nbd+unix:///name?socket=…`; `nbds…` with TLS).
   */
  get uri(): string {
    const name = encodeURIComponent(this.#exportName);
    const path = this.socketPath;
    const s = this.#tls ? "s" : "";
    if (path !== undefined)
      return `nbd${s}+unix:///${name}?socket=${encodeURIComponent(path).replaceAll("%2F", "/")}`;
    const h = this.#host === "0.0.0.0" || this.#host === "" ? "127.0.0.1" : this.#host;
    const host = h.includes(":") ? `[${h}]` : h;
    return `nbd${s}://${host}:${this.port}/${name}`;
  }

  /** Stop serving: disconnect clients after their in-flight requests, flush, close the image. */
  close(): Promise<void> {
    this.#closing ??= callNative(() => this.#native.close()).then(
      () => this.closed,
      async (e) => {
        await this.closed.catch(() => {});
        throw e;
      },
    );
    return this.#closing;
  }

  /** `await using srv = await serve(...)` stops the server at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function checkInt(name: string, v: number | undefined, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > max)) {
    throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Invalid ${name}: ${v}`);
  }
}

/**
 * Export an image over NBD. `image` is a spec (opened here, read-only with `readOnly`, and
 * closed when the server stops) or an opened {@link Image} (left open: close it after
 * `closed` settles).
 */
export async function serve(
  image: string | ImageOptions | Image,
  opts: ServeOptions = {},
): Promise<NbdServer> {
  checkInt("port number", opts.port, 65535);
  checkInt("shared device number", opts.shared, 0xffffffff);
  const owns = !(image instanceof Image);
  const img =
    image instanceof Image
      ? image
      : await open(image, { format: opts.format, locking: opts.locking, readOnly: opts.readOnly ?? false });
  const readOnly = opts.readOnly ?? img.readOnly;
  if (!readOnly && img.readOnly) {
    throw new QimgError("ERR_QIMG_READ_ONLY", "Cannot serve a read-only image writable", {
      path: img.filename,
    });
  }
  const host = opts.bind ?? "0.0.0.0";
  let onStop!: (err: string) => void;
  const stopped = new Promise<string>((resolve) => {
    onStop = resolve;
  });
  try {
    const n = await callNative(() =>
      native.serveImage(
        img.native,
        {
          socket: opts.socket,
          bind: opts.socket === undefined ? host : undefined,
          port: opts.port,
          exportName: opts.exportName,
          description: opts.description,
          readOnly,
          shared: opts.shared,
          persistent: opts.persistent,
          tls: opts.tls && { kind: opts.tls.type, dir: opts.tls.dir, verifyPeer: opts.tls.verifyPeer },
          allocationDepth: opts.allocationDepth,
        },
        (err) => onStop(err),
      ),
    );
    return new NbdServer(n, stopped, img, owns, opts.exportName ?? "", host, opts.tls !== undefined);
  } catch (e) {
    if (owns) await img.close();
    throw e;
  }
}
