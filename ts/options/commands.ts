/** Per-command option tables, with qemu-img's letters and long names. */
import type { OptionSpec } from "./argv.js";

const common: OptionSpec["long"] = {
  help: [false, "h"],
  object: [true, "object"],
  "image-opts": [false, "image-opts"],
  "force-share": [false, "U"],
  format: [true, "f"],
  quiet: [false, "q"],
};

/** qemu-img's option tables for the commands qimg implements. */
export const COMMAND_SPECS: Record<string, OptionSpec> = {
  create: {
    short: { F: true, b: true, f: true, h: false, o: true, q: false, u: false },
    long: {
      ...common,
      options: [true, "o"],
      backing: [true, "b"],
      "backing-format": [true, "F"],
      "backing-unsafe": [false, "u"],
    },
  },
  info: {
    short: { f: true, h: false, U: false },
    long: { ...common, output: [true, "output"], "backing-chain": [false, "backing-chain"] },
  },
  convert: {
    short: {
      h: false,
      f: true,
      F: true,
      O: true,
      B: true,
      C: false,
      c: false,
      o: true,
      l: true,
      S: true,
      p: false,
      t: true,
      T: true,
      q: false,
      n: false,
      m: true,
      W: false,
      U: false,
      r: true,
    },
    long: {
      ...common,
      "target-image-opts": [false, "target-image-opts"],
      "target-is-zero": [false, "target-is-zero"],
      salvage: [false, "salvage"],
      bitmaps: [false, "bitmaps"],
      "skip-broken-bitmaps": [false, "skip-broken-bitmaps"],
      "target-format": [true, "O"],
      options: [true, "o"],
      progress: [false, "p"],
      parallel: [true, "m"],
    },
  },
  check: {
    short: { h: false, f: true, r: true, T: true, q: false, U: false },
    long: { ...common, repair: [true, "r"], output: [true, "output"] },
  },
  compare: {
    short: { h: false, f: true, F: true, T: true, p: false, q: false, s: false, U: false },
    long: {
      ...common,
      "a-format": [true, "f"],
      "b-format": [true, "F"],
      strict: [false, "s"],
      progress: [false, "p"],
    },
  },
  map: {
    short: { f: true, h: false, U: false, s: true, l: true },
    long: { ...common, output: [true, "output"], "start-offset": [true, "s"], "max-length": [true, "l"] },
  },
};
