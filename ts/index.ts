/**
 * qimg: QEMU's block layer for Node.js.
 *
 * `open()` an image (any spec qemu-img takes) for typed async I/O, or run the qemu-img jobs:
 * `create`, `convert`, `check`, `compare`, `info`, `map`, `measure`, `resize`, `amend`,
 * `commit`, `rebase`, `bitmap`, `snapshot`; `serve` an image over NBD.
 */
export { isQimgError, QimgError, type QimgErrorCode } from "./errors.js";
export { type OpenOptions, open } from "./graph/open.js";
export type { ImageOptions } from "./graph/spec.js";
export { defineObjects } from "./graph/tls.js";
export {
  type BitmapAction,
  type BitmapData,
  type BitmapInfo,
  type BlockStatusEntry,
  Image,
  type SnapshotInfo,
  type SnapshotSelector,
} from "./image.js";
export { type AmendOptions, amend } from "./jobs/amend.js";
export { type BenchOptions, type BenchResult, bench } from "./jobs/bench.js";
export { type BitmapOptions, type BitmapStep, bitmap, copyBitmaps } from "./jobs/bitmap.js";
export {
  type CheckOptions,
  type CheckOutcome,
  type CheckResult,
  check,
  checkExitCode,
} from "./jobs/check.js";
export { type CommitOptions, type CommitResult, commit } from "./jobs/commit.js";
export { type CompareOptions, type CompareResult, compare } from "./jobs/compare.js";
export { type ConvertOptions, type ConvertResult, convert } from "./jobs/convert.js";
export { type CreateOptions, create } from "./jobs/create.js";
export { type ImageInfo, type InfoOptions, info } from "./jobs/info.js";
export { Job, type Progress } from "./jobs/job.js";
export { type MapOptions, type MapResultEntry, map } from "./jobs/map.js";
export { type MeasureOptions, type MeasureResult, measure } from "./jobs/measure.js";
export { listNbdExports, type NbdExport } from "./jobs/nbd-list.js";
export { type RebaseOptions, type RebaseResult, rebase } from "./jobs/rebase.js";
export { type ResizeOptions, resize } from "./jobs/resize.js";
export { NbdServer, type ServeOptions, type ServeTls, serve } from "./jobs/serve.js";
export { type SnapshotAction, type SnapshotOptions, snapshot } from "./jobs/snapshot.js";
export {
  type NvmeBenchOptions,
  type NvmeBenchResult,
  NvmeController,
  type NvmeIdentify,
  NvmeNamespace,
  type NvmeStats,
} from "./nvme/controller.js";
export { parseObject, parseObjects, type QomObject } from "./options/object.js";
export { resolveSecret } from "./options/secrets.js";
export { formatNames } from "./registry/index.js";
