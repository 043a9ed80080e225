/** `qimg map`: qemu-img's human table or JSON list. */

import { QimgError } from "../errors.js";
import type { ImageOptions } from "../graph/spec.js";
import { map } from "../jobs/map.js";
import type { Io } from "./output.js";

/** What the `map` command needs. */
export interface MapArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `--output`. */
  output: "human" | "json";
  /** `--start-offset`. */
  startOffset?: number;
  /** `--max-length`. */
  maxLength?: number;
  /** `-U`. */
  forceShare: boolean;
}

const hex = (n: number) => (n === 0 ? "0" : `0x${n.toString(16)}`);

/** Run `map`; returns the exit code. */
export async function mapCommand(a: MapArgs, io: Io): Promise<number> {
  const entries = await map(a.image, {
    format: a.format,
    startOffset: a.startOffset,
    maxLength: a.maxLength,
    forceShare: a.forceShare,
  });
  if (a.output === "json") {
    const lines = entries.map((e) => {
      const off = e.offset !== undefined ? `, "offset": ${e.offset}` : "";
      return `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}, "compressed": ${e.compressed}${off}}`;
    });
    io.out(`[${lines.join(",\n")}]\n`);
    return 0;
  }
  io.out(`${"Offset".padEnd(16)}${"Length".padEnd(16)}${"Mapped to".padEnd(16)}File\n`);
  for (const e of entries) {
    if (e.data && e.offset === undefined) {
      // qemu-img's human map cannot name a host range for these.
      throw new QimgError(
        "ERR_QIMG_UNSUPPORTED",
        "File contains external, encrypted or compressed clusters.",
      );
    }
    if (e.data && e.offset !== undefined) {
      io.out(
        `${hex(e.start).padEnd(16)}${hex(e.length).padEnd(16)}${hex(e.offset).padEnd(16)}${e.filename}\n`,
      );
    }
  }
  return 0;
}
