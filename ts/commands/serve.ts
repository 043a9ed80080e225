/**
 * `qimg serve`: qemu-nbd's server in the foreground. Runs until stopped (SIGTERM, SIGINT) or,
 * without `--persistent`, until the last client has left; either way the image is flushed and
 * closed (locks released) before the process exits 0.
 */
import { rmSync, writeFileSync } from "node:fs";
import { QimgError } from "../errors.js";
import type { ImageOptions } from "../graph/spec.js";
import { type ServeTls, serve } from "../jobs/serve.js";
import type { Io } from "./output.js";

/** What the `serve` command needs. */
export interface ServeArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `-x`. */
  exportName: string;
  /** `-D`. */
  description?: string;
  /** `-r`. */
  readOnly: boolean;
  /** `-k`. */
  socket?: string;
  /** `-b`. */
  bind: string;
  /** `-p`. */
  port: number;
  /** `-t`. */
  persistent: boolean;
  /** `-e`. */
  shared: number;
  /** `--tls-creds` (resolved against `--object`). */
  tls?: ServeTls;
  /** `-A`. */
  allocationDepth?: boolean;
  /** `--pid-file`. */
  pidFile?: string;
  /** SIGINT from the CLI. */
  signal?: AbortSignal;
}

/** Run `serve`; returns the exit code once the server has stopped. */
export async function serveCommand(a: ServeArgs, io: Io): Promise<number> {
  const srv = await serve(a.image, {
    format: a.format,
    exportName: a.exportName,
    description: a.description,
    readOnly: a.readOnly,
    socket: a.socket,
    bind: a.bind,
    port: a.port,
    persistent: a.persistent,
    shared: a.shared,
    tls: a.tls,
    allocationDepth: a.allocationDepth,
  });
  if (a.pidFile !== undefined) {
    try {
      writeFileSync(a.pidFile, `${process.pid}\n`);
    } catch (e) {
      await srv.close();
      throw new QimgError("ERR_QIMG_IO", `Failed to write pid file '${a.pidFile}': ${(e as Error).message}`, {
        path: a.pidFile,
        cause: e,
      });
    }
  }
  // With `--port 0` the OS picks the port: say which (qemu-nbd has no such mode).
  if (a.socket === undefined && a.port === 0) io.out(`${srv.uri}\n`);
  const stop = () => {
    srv.close().catch(() => {});
  };
  process.once("SIGTERM", stop);
  a.signal?.addEventListener("abort", stop, { once: true });
  try {
    await srv.closed;
  } finally {
    if (a.pidFile !== undefined) rmSync(a.pidFile, { force: true });
    process.removeListener("SIGTERM", stop);
    a.signal?.removeEventListener("abort", stop);
  }
  return 0;
}
