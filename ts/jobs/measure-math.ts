/**
 * The size arithmetic of `qemu-img measure`, as QEMU's qcow2 and raw drivers do it: a fully
 * allocated qcow2 file is one header cluster, the L2 tables, the L1 table and the refcount
 * structures covering all of that plus the data; the required size drops the data clusters the
 * source does not need. Everything is bigint so sizes up to 2^63 stay exact.
 */

/** The qcow2 target's creation options that change the arithmetic. */
export interface Qcow2Geometry {
  /** Cluster size in bytes (a power of two, 512..2 MiB). */
  clusterSize: bigint;
  /** Refcount entry width in bits (a power of two, 1..64). */
  refcountBits: bigint;
  /** Extended L2 entries (16 bytes instead of 8). */
  extendedL2: boolean;
}

const roundUp = (v: bigint, a: bigint): bigint => ((v + a - 1n) / a) * a;
const divUp = (v: bigint, d: bigint): bigint => (v + d - 1n) / d;

/**
 * Bytes of refcount table and blocks needed to count `clusters` clusters plus themselves (QEMU's
 * `qcow2_refcount_metadata_size` without the generous increase): iterate until the blocks and
 * table clusters also counted stop changing.
 */
export function refcountMetadataSize(clusters: bigint, clusterSize: bigint, refcountBits: bigint): bigint {
  const blocksPerTableCluster = clusterSize / 8n;
  const refcountsPerBlock = (clusterSize * 8n) / refcountBits;
  let table = 0n;
  let blocks = 0n;
  let n = 0n;
  let last: bigint;
  do {
    last = n;
    blocks = divUp(clusters + table + blocks, refcountsPerBlock);
    table = divUp(blocks, blocksPerTableCluster);
    n = clusters + blocks + table;
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

/** Size of a qcow2 file with every cluster of `virtualSize` allocated (`qcow2_calc_prealloc_size`). */
export function qcow2FullyAllocated(virtualSize: bigint, g: Qcow2Geometry): bigint {
  const cs = g.clusterSize;
  const l2e = g.extendedL2 ? 16n : 8n;
  const aligned = roundUp(virtualSize, cs);
  let meta = cs; // the header cluster
  const nl2e = roundUp(aligned / cs, cs / l2e);
  meta += nl2e * l2e;
  const nl1e = roundUp((nl2e * l2e) / cs, cs / 8n);
  meta += nl1e * 8n;
  meta += refcountMetadataSize((meta + aligned) / cs, cs, g.refcountBits);
  return meta + aligned;
}

/** True if the L1 table for `virtualSize` would exceed QEMU's 32 MiB limit. */
export function qcow2TooLarge(virtualSize: bigint, g: Qcow2Geometry): boolean {
  const cs = g.clusterSize;
  const l2Tables = divUp(roundUp(virtualSize, cs) / cs, cs / (g.extendedL2 ? 16n : 8n));
  return l2Tables * 8n > 32n << 20n;
}

/** One source range as block status reports it through the whole chain. */
export interface MeasureExtent {
  /** Guest offset. */
  start: bigint;
  /** Length in bytes. */
  length: bigint;
  /** Reads as zeros. */
  zero: boolean;
  /** Allocated (in some layer) and holding data. */
  data: boolean;
}

/**
 * Data bytes a qcow2 copy of the source needs (QEMU's loop over `bdrv_block_status_above`): zero
 * ranges are skipped; each data range counts from its own start within its first cluster to the end
 * of its last cluster, and the next range starts after that cluster.
 */
export function qcow2RequiredData(
  extents: readonly MeasureExtent[],
  size: bigint,
  clusterSize: bigint,
): bigint {
  let required = 0n;
  let offset = 0n;
  let i = 0;
  while (offset < size) {
    while (i < extents.length && extents[i].start + extents[i].length <= offset) i++;
    const e = extents[i];
    if (e === undefined) break;
    let pnum = e.start + e.length - offset;
    if (!e.zero && e.data) {
      pnum = roundUp(offset + pnum, clusterSize) - offset;
      required += (offset % clusterSize) + pnum;
    }
    offset += pnum;
  }
  return required;
}

/** What `qemu-img measure` reports. */
export interface MeasureSizes {
  /** Bytes the new image needs. */
  required: bigint;
  /** Bytes the new image takes fully allocated. */
  fullyAllocated: bigint;
}

/** The qcow2 target's measurement for a source of `virtualSize` needing `requiredData` data bytes. */
export function qcow2Measure(
  virtualSize: bigint,
  requiredData: bigint,
  g: Qcow2Geometry,
  prealloc: string,
): MeasureSizes {
  const aligned = roundUp(virtualSize, g.clusterSize);
  const required = prealloc === "full" || prealloc === "falloc" ? aligned : requiredData;
  const fullyAllocated = qcow2FullyAllocated(aligned, g);
  return { required: fullyAllocated - aligned + required, fullyAllocated };
}

/** The raw target's measurement: the size (a source's length, or `--size` rounded to 512). */
export function rawMeasure(size: bigint, fromImage: boolean): MeasureSizes {
  const required = fromImage ? size : roundUp(size, 512n);
  return { required, fullyAllocated: required };
}
