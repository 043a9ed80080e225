/** The vmdk `-o` options of `create`, mapped to the native create options. */
import { QimgError } from "../errors.js";

type Get = (k: string) => string | number | boolean | undefined;

function bool(name: string, v: string | number | boolean | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === true || v === "on" || v === "true") return true;
  if (v === false || v === "off" || v === "false") return false;
  throw new QimgError("ERR_QIMG_INVALID_ARGUMENT", `Parameter '${name}' expects 'on' or 'off'`);
}

const str = (v: string | number | boolean | undefined) => (v === undefined ? undefined : String(v));

/** `compat6`, `hwversion`, `adapter_type`, `toolsversion`, `zeroed_grain`. */
export function vmdkCreateOptions(get: Get) {
  return {
    compat6: bool("compat6", get("compat6")),
    hwversion: str(get("hwversion")),
    adapterType: str(get("adapter_type")),
    toolsversion: str(get("toolsversion")),
    zeroedGrain: bool("zeroed_grain", get("zeroed_grain")),
  };
}
