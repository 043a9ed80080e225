/**
 * List the exports of an NBD server (`NBD_OPT_LIST`), as `nbdinfo --list` does; qemu-img has
 * no equivalent. The address is any NBD address string or target; its export name is ignored,
 * its TLS settings are used.
 */
import { QimgError } from "../errors.js";
import { isNbdString, type NbdTarget, parseNbdString } from "../graph/nbd.js";
import { resolveTls } from "../graph/tls.js";
import { callNative, native } from "../native.js";

/** One export a server lists. */
export interface NbdExport {
  /** Export name. */
  name: string;
  /** Description ("" when the server gave none). */
  description: string;
}

/** List the exports of the NBD server at `address` (a URI / legacy string, or a target). */
export async function listNbdExports(address: string | NbdTarget): Promise<NbdExport[]> {
  let t: NbdTarget;
  if (typeof address === "string") {
    if (!isNbdString(address)) {
      throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `'${address}' is not an NBD address`);
    }
    t = parseNbdString(address);
  } else t = address;
  const tls = t.tlsCreds === undefined ? undefined : resolveTls(t.tlsCreds, t.tlsHostname);
  return callNative(() =>
    native.nbdListExports({
      serverType: t.serverType,
      host: t.host,
      port: t.port,
      path: t.path,
      export: t.export,
      tls,
    }),
  );
}
