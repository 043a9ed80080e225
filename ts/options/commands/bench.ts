/**
 * `qemu-img bench`: `[-f fmt | --image-opts] [-t cache] [-c count] [-d depth] [-o offset]
 * [-s buffer_size] [-S step_size] [-i aio] [-n] [-w [--pattern p] [--flush-interval n
 * [--no-drain]]] [-U] [-q] filename`, with qemu-img 10's option names, ranges and messages.
 */
import { has, last, type OptionSpec, type ParsedArgs } from "../argv.js";
import type { QomObject } from "../object.js";
import { cvtnum } from "../size.js";
import {
  CACHE_MODES,
  COMMON_LONG,
  fail,
  type ImageArg,
  imageArg,
  imageOptsExclusive,
  onePositional,
} from "./common.js";

/** qemu-img bench's options (getopt `hc:d:f:ni:o:qs:S:t:wU`). */
export const BENCH_SPEC: OptionSpec = {
  short: {
    c: true,
    d: true,
    f: true,
    h: false,
    i: true,
    n: false,
    o: true,
    q: false,
    s: true,
    S: true,
    t: true,
    U: false,
    w: false,
  },
  long: {
    ...COMMON_LONG,
    "image-opts": [false, "image-opts"],
    quiet: [false, "q"],
    format: [true, "f"],
    cache: [true, "t"],
    count: [true, "c"],
    "buffer-size": [true, "s"],
    depth: [true, "d"],
    offset: [true, "o"],
    "step-size": [true, "S"],
    aio: [true, "i"],
    native: [false, "n"],
    write: [false, "w"],
    pattern: [true, "pattern"],
    "flush-interval": [true, "flush-interval"],
    "no-drain": [false, "no-drain"],
    "force-share": [false, "U"],
  },
};

const INT_MAX = 2147483647n;

/** A parsed `bench`. */
export interface BenchCommand {
  cmd: "bench";
  /** The image: the filename, or the parsed spec with `--image-opts`. */
  image: ImageArg;
  /** `-f`. */
  format?: string;
  /** `-c`: requests to send (default 75000). */
  count: number;
  /** `-d`: requests in flight (default 64). */
  depth: number;
  /** `-o`: offset of the first request. */
  offset: number;
  /** `-s`: bytes per request (default 4096). */
  bufferSize: number;
  /** `-S`: offset increment between requests (0 = the buffer size). */
  stepSize: number;
  /** `-w`: write instead of read. */
  write: boolean;
  /** `--pattern`: the byte written (default 0). */
  pattern: number;
  /** `--flush-interval`: flush after this many requests (0 = never). */
  flushInterval: number;
  /** `--no-drain`: flush without waiting for the requests in flight. */
  noDrain: boolean;
  /** `-t`: cache mode of the host file. */
  cache?: string;
  /** `-i`: AIO backend (accepted and checked). */
  aio?: string;
  /** `-U`. */
  forceShare: boolean;
  /** `-q`. */
  quiet: boolean;
  /** `--object` definitions. */
  objects: QomObject[];
}

/** Build a bench command from parsed arguments, with qemu-img's messages. */
export function buildBench(p: ParsedArgs, objects: QomObject[]): BenchCommand {
  const num = (key: string, name: string, def: number, min: bigint, max: bigint, isSize: boolean) => {
    const v = last(p, key);
    return v === undefined ? def : cvtnum(name, v, min, max, isSize);
  };
  const count = num("c", "request count", 75000, 1n, INT_MAX, false);
  const depth = num("d", "queue depth", 64, 1n, INT_MAX, false);
  const offset = num("o", "offset", 0, 0n, 9223372036854775807n, true);
  const bufferSize = num("s", "buffer size", 4096, 1n, INT_MAX, true);
  const stepSize = num("S", "step size", 0, 0n, INT_MAX, true);
  const pattern = num("pattern", "pattern byte", 0, 0n, 255n, false);
  const flushInterval = num("flush-interval", "flush interval", 0, 0n, INT_MAX, false);
  const cache = last(p, "t");
  if (cache !== undefined && !CACHE_MODES.has(cache)) fail("Invalid cache mode");
  const aio = last(p, "i");
  if (aio !== undefined && !["threads", "native", "io_uring"].includes(aio))
    fail(`Invalid aio option: ${aio}`);
  const write = has(p, "w");
  if (has(p, "flush-interval") && !write) fail("--flush-interval is only available in write tests");
  if (flushInterval > 0 && flushInterval < depth) fail("Flush interval can't be smaller than depth");
  imageOptsExclusive(p);
  const filename = onePositional(p);
  if (write && has(p, "U")) {
    fail(`Could not open '${filename}': force-share=on can only be used with read-only images`);
  }
  const nativeAio = has(p, "n") || aio === "native";
  if (nativeAio && !(cache === "none" || cache === "off" || cache === "directsync")) {
    fail(
      `Could not open '${filename}': aio=native was specified, but it requires cache.direct=on, which was not specified.`,
    );
  }
  const c: BenchCommand = {
    cmd: "bench",
    image: imageArg(filename, has(p, "image-opts")),
    count,
    depth,
    offset,
    bufferSize,
    stepSize: stepSize || bufferSize,
    write,
    pattern,
    flushInterval,
    noDrain: has(p, "no-drain"),
    forceShare: has(p, "U"),
    quiet: has(p, "q"),
    objects,
  };
  const f = last(p, "f");
  if (f !== undefined) c.format = f;
  if (cache !== undefined) c.cache = cache;
  if (aio !== undefined) c.aio = aio;
  return c;
}
