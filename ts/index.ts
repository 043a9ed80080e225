/**
 * qimg: QEMU's block layer for Node.js.
 *
 * `open()` an image (any spec qemu-img takes) for typed async I/O, or run the qemu-img jobs:
 * `create`, `convert`, `check`, `compare`, `info`, `map`.
 */
export { QimgError, type QimgErrorCode, isQimgError } from "./errors.js";
export { open, type OpenOptions } from "./graph/open.js";
export type { ImageOptions } from "./graph/spec.js";
export { Image, type BlockStatusEntry } from "./image.js";
export { check, checkExitCode, type CheckOptions, type CheckOutcome, type CheckResult } from "./jobs/check.js";
export { compare, type CompareOptions, type CompareResult } from "./jobs/compare.js";
export { convert, type ConvertOptions, type ConvertResult } from "./jobs/convert.js";
export { create, type CreateOptions } from "./jobs/create.js";
export { info, type ImageInfo, type InfoOptions } from "./jobs/info.js";
export { Job, type Progress } from "./jobs/job.js";
export { map, type MapOptions, type MapResultEntry } from "./jobs/map.js";
export { formatNames } from "./registry/index.js";
