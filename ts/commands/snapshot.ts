/** `qimg snapshot`: qemu-img's snapshot command, and its snapshot table (also used by `info`). */
import type { ImageOptions } from "../graph/spec.js";
import { type SnapshotJson, snapshotJson } from "../jobs/node-info.js";
import { type SnapshotAction, snapshot } from "../jobs/snapshot.js";
import { type Io, sizeToStr } from "./output.js";

/** What the `snapshot` command needs. */
export interface SnapshotArgs {
  /** The image. */
  image: string | ImageOptions;
  /** `-f`. */
  format?: string;
  /** `-l`, `-c`, `-a` or `-d` (list when none was given). */
  action: SnapshotAction;
  /** `-U`. */
  forceShare: boolean;
  /** `-q`. */
  quiet: boolean;
}

const pad2 = (n: number) => String(n).padStart(2, "0");

/** One row of qemu's `bdrv_snapshot_dump` (no row: the header). Dates are local time. */
export function snapshotRow(s?: SnapshotJson): string {
  const row = (id: string, tag: string, size: string, date: string, clock: string, icount: string) =>
    `${id.padEnd(7)} ${tag.padEnd(16)} ${size.padStart(8)} ${date.padStart(19)} ${clock.padStart(15)} ${icount.padStart(10)}`;
  if (!s) return row("ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT");
  const d = new Date(s["date-sec"] * 1000);
  const date =
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const secs = s["vm-clock-sec"];
  const clock =
    `${String(Math.floor(secs / 3600)).padStart(4, "0")}:${pad2(Math.floor(secs / 60) % 60)}:` +
    `${pad2(secs % 60)}.${String(Math.floor(s["vm-clock-nsec"] / 1e6)).padStart(3, "0")}`;
  return row(
    s.id,
    s.name,
    sizeToStr(s["vm-state-size"]),
    date,
    clock,
    s.icount === undefined ? "" : String(s.icount),
  );
}

/** qemu-img's "Snapshot list:" block (empty when there are no snapshots). */
export function snapshotTable(list: readonly SnapshotJson[]): string {
  if (list.length === 0) return "";
  return `Snapshot list:\n${[snapshotRow(), ...list.map((s) => snapshotRow(s))].join("\n")}\n`;
}

/** Run `snapshot`; returns the exit code. */
export async function snapshotCommand(a: SnapshotArgs, io: Io): Promise<number> {
  const list = await snapshot(a.image, a.action, { format: a.format, forceShare: a.forceShare });
  if (a.action.op === "list") io.out(snapshotTable(list.map(snapshotJson)));
  return 0;
}
