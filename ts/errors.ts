/**
 * qimg's error type: every failure carries a stable `code` (`ERR_QIMG_…`), the path and offset it
 * concerns where known, and the OS errno; the native cause is kept as `cause`.
 */

/** Stable error codes. New codes may be added; existing ones never change meaning. */
export type QimgErrorCode =
  | "ERR_QIMG_IO"
  | "ERR_QIMG_CORRUPT"
  | "ERR_QIMG_UNSUPPORTED"
  | "ERR_QIMG_INVALID_ARGUMENT"
  | "ERR_QIMG_LOCKED"
  | "ERR_QIMG_NOT_FOUND"
  | "ERR_QIMG_READ_ONLY"
  | "ERR_QIMG_OUT_OF_RANGE"
  | "ERR_QIMG_ABORTED"
  | "ERR_QIMG_WRONG_FORMAT"
  | "ERR_QIMG_INTERNAL";

/** Where an error happened, and its cause. */
export interface QimgErrorOptions {
  /** File or URI concerned. */
  path?: string;
  /** Byte offset concerned. */
  offset?: number;
  /** OS errno behind an I/O error. */
  errno?: number;
  /** NVMe status code type of a failed NVMe command. */
  nvmeStatusCodeType?: number;
  /** NVMe status code of a failed NVMe command. */
  nvmeStatusCode?: number;
  /** The underlying error. */
  cause?: unknown;
}

/** An error from qimg, with a stable `code`. */
export class QimgError extends Error {
  /** Stable error code. */
  readonly code: QimgErrorCode;
  /** File or URI concerned. */
  readonly path?: string;
  /** Byte offset concerned. */
  readonly offset?: number;
  /** OS errno behind an I/O error. */
  readonly errno?: number;
  /** NVMe status code type (SCT) of a failed NVMe command. */
  readonly nvmeStatusCodeType?: number;
  /** NVMe status code (SC) of a failed NVMe command. */
  readonly nvmeStatusCode?: number;

  constructor(code: QimgErrorCode, message: string, opts: QimgErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "QimgError";
    this.code = code;
    if (opts.path !== undefined) this.path = opts.path;
    if (opts.offset !== undefined) this.offset = opts.offset;
    if (opts.errno !== undefined) this.errno = opts.errno;
    if (opts.nvmeStatusCodeType !== undefined) this.nvmeStatusCodeType = opts.nvmeStatusCodeType;
    if (opts.nvmeStatusCode !== undefined) this.nvmeStatusCode = opts.nvmeStatusCode;
  }
}

/** True if `e` is a QimgError (optionally with the given code). */
export function isQimgError(e: unknown, code?: QimgErrorCode): e is QimgError {
  return e instanceof QimgError && (code === undefined || e.code === code);
}
