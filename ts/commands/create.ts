/** `qimg create` and `-o help`. */

import type { CreateOptions } from "../jobs/create.js";
import { create } from "../jobs/create.js";
import { legacyAesWarning } from "../jobs/create-encryption.js";
import { getFormat } from "../registry/index.js";
import type { Io } from "./output.js";

/** What the `create` command needs. */
export interface CreateArgs {
  /** Target file. */
  filename: string;
  /** `-f` (default raw). */
  format: string;
  /** Size in bytes, if given. */
  size?: number;
  /** `-o` options in order. */
  options: Record<string, string>;
  /** `-b`. */
  backingFile?: string;
  /** `-F`. */
  backingFormat?: string;
  /** `-u`. */
  unsafe: boolean;
  /** `-q`. */
  quiet: boolean;
}

const TYPE = { size: "<size>", number: "<num>", bool: "<bool (on/off)>", string: "<str>" } as const;

/** qemu-img's `-o help` text for a format. */
export function optionsHelp(format: string): string {
  const f = getFormat(format);
  const lines = f.createOptions
    .filter((o) => !o.protocol)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((o) => `  ${`${o.name}=${TYPE[o.type]}`.padEnd(22)} - ${o.help}`);
  return (
    `Supported ${format} options:\n${lines.join("\n")}\n\n` +
    "The protocol level may support further options.\nSpecify the target filename to include those options.\n"
  );
}

/** Run `create`; returns the exit code. */
export async function createCommand(a: CreateArgs, io: Io): Promise<number> {
  const opts: CreateOptions = {
    format: a.format,
    size: a.size,
    options: a.options,
    backingFile: a.backingFile,
    backingFormat: a.backingFormat,
    unsafe: a.unsafe,
  };
  const warn = legacyAesWarning(a.format, a.options);
  if (warn) io.err(`qimg: ${warn}\n`);
  await create(a.filename, opts);
  if (!a.quiet) {
    const parts = [`fmt=${a.format}`];
    for (const [k, v] of Object.entries(a.options)) if (k !== "size") parts.push(`${k}=${v}`);
    if (a.backingFile) parts.push(`backing_file=${a.backingFile}`);
    if (a.backingFormat) parts.push(`backing_fmt=${a.backingFormat}`);
    if (a.size !== undefined) parts.push(`size=${a.size}`);
    io.out(`Formatting '${a.filename}', ${parts.join(" ")}\n`);
  }
  return 0;
}
