/**
 * The loader of the native addon and the one place where native errors become `QimgError`s.
 *
 * The addon reports errors as data: a message `QIMG:{json}` with the code, message, path, offset
 * and errno (see `native/src/error.rs`). {@link callNative} unwraps them.
 */
import { createRequire } from "node:module";
import type * as Binding from "../native/binding.js";
import { QimgError, type QimgErrorCode } from "./errors.js";

const require = createRequire(import.meta.url);

/** The loaded addon (typed by the generated `native/binding.d.ts`). */
export const native: typeof Binding = require("../native/binding.cjs");

export type {
  CopyRangeStats,
  MapEntry,
  NativeBitmap,
  NativeBitmapAction,
  NativeBitmapData,
  NativeCheck,
  NativeImage,
  NativeInfo,
  NativeServer,
  NativeSnapshot,
  NvmeBenchOptions,
  NvmeBenchResult,
  NvmeIdentify,
  NvmeStats,
} from "../native/binding.js";

/** Turn anything thrown by the addon into a QimgError (other errors pass through unchanged). */
export function unwrapNativeError(e: unknown): unknown {
  if (!(e instanceof Error) || !e.message.startsWith("QIMG:")) return e;
  try {
    const d = JSON.parse(e.message.slice(5)) as {
      code: QimgErrorCode;
      message: string;
      path?: string;
      offset?: number;
      errno?: number;
      nvmeStatusCodeType?: number;
      nvmeStatusCode?: number;
    };
    const cause =
      d.errno === undefined ? undefined : Object.assign(new Error(`errno ${d.errno}`), { errno: d.errno });
    return new QimgError(d.code, d.message, {
      path: d.path,
      offset: d.offset,
      errno: d.errno,
      nvmeStatusCodeType: d.nvmeStatusCodeType,
      nvmeStatusCode: d.nvmeStatusCode,
      cause,
    });
  } catch {
    return e;
  }
}

/** Await a native promise (or run a sync native call), converting its errors. */
export async function callNative<T>(f: () => Promise<T> | T): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw unwrapNativeError(e);
  }
}
