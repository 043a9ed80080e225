/** Format probing of a host file: read the head and ask the registry. */
import { open as fsOpen } from "node:fs/promises";
import { QimgError } from "../errors.js";
import { probeFormat } from "../registry/index.js";

/** Bytes read for probing (QEMU reads 2048 bytes). */
export const PROBE_BYTES = 2048;
/** Bytes read from the end of the file for probing (a DMG's koly trailer). */
const TAIL_BYTES = 512;

/** Probe the format of `filename` by content. */
export async function probeFile(filename: string): Promise<string> {
  let fh: Awaited<ReturnType<typeof fsOpen>> | undefined;
  try {
    fh = await fsOpen(filename, "r");
    const buf = Buffer.alloc(PROBE_BYTES);
    const { bytesRead } = await fh.read(buf, 0, PROBE_BYTES, 0);
    // The last 512 bytes too: a DMG is recognised by its trailer.
    const { size } = await fh.stat();
    let tail: Uint8Array | undefined;
    if (size >= TAIL_BYTES) {
      tail = Buffer.alloc(TAIL_BYTES);
      await fh.read(tail, 0, TAIL_BYTES, size - TAIL_BYTES);
    }
    return probeFormat(buf.subarray(0, bytesRead), filename, tail);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT") {
      throw new QimgError("ERR_QIMG_NOT_FOUND", `Could not open '${filename}': No such file or directory`, {
        path: filename,
        errno: err.errno,
        cause: e,
      });
    }
    throw new QimgError("ERR_QIMG_IO", `Could not open '${filename}': ${err.message}`, {
      path: filename,
      errno: err.errno,
      cause: e,
    });
  } finally {
    await fh?.close();
  }
}
