/** `qimg bench`: qemu-img bench's two report lines around {@link bench}. */
import type { ImageOptions } from "../graph/spec.js";
import { bench } from "../jobs/bench.js";
import type { BenchCommand } from "../options/commands/bench.js";
import type { Io } from "./output.js";

/** Run `bench`; returns the exit code (a failed request throws, as qemu-img exits 1). */
export async function benchCommand(c: BenchCommand, io: Io): Promise<number> {
  io.out(
    `Sending ${c.count} ${c.write ? "write" : "read"} requests, ${c.bufferSize} bytes each, ${c.depth} in parallel (starting at offset ${c.offset}, step size ${c.stepSize})\n`,
  );
  if (c.flushInterval > 0) io.out(`Sending flush every ${c.flushInterval} requests\n`);
  const r = await bench(c.image as string | ImageOptions, {
    format: c.format,
    count: c.count,
    depth: c.depth,
    offset: c.offset,
    bufferSize: c.bufferSize,
    stepSize: c.stepSize,
    write: c.write,
    pattern: c.pattern,
    flushInterval: c.flushInterval,
    noDrain: c.noDrain,
    forceShare: c.forceShare,
    objects: c.objects,
    cache: c.cache,
  });
  io.out(`Run completed in ${r.seconds.toFixed(3)} seconds.\n`);
  return 0;
}
