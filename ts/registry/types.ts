/** The shape of a format registry entry. */

/** One `-o` option a format accepts at create time. */
export interface CreateOptionSpec {
  /** qemu-img's option name (`cluster_size`). */
  name: string;
  /** Value type, as `-o help` prints it. */
  type: "size" | "number" | "bool" | "string";
  /** Help text (qemu-img's wording). */
  help: string;
  /** Default, as `-o help` prints it. */
  default?: string;
  /** A protocol-level option (file): accepted, but not listed by the format's `-o help`. */
  protocol?: boolean;
}

/** A format qimg knows. */
export interface FormatEntry {
  /** Format name (`-f` / `-O`). */
  name: string;
  /**
   * Score how likely `head` (the first 512+ bytes), `filename` and `tail` (the last 512 bytes,
   * when the file has them: DMG keeps its trailer there) are this format; 0 = not.
   */
  probe(head: Uint8Array, filename: string, tail?: Uint8Array): number;
  /** True if qimg can create and write it. */
  writable: boolean;
  /** True if images of this format can have a backing file. */
  supportsBacking: boolean;
  /** Create options, in qemu-img's `-o help` order. */
  createOptions: CreateOptionSpec[];
  /** Whether `check` is implemented (qemu-img exits 63 otherwise). */
  supportsCheck: boolean;
  /**
   * False for formats whose QEMU driver has no `bdrv_get_info` (parallels, bochs, cloop, dmg):
   * qemu-img's `info` then prints no `dirty-flag`. Default true.
   */
  reportsDirtyFlag?: boolean;
}
