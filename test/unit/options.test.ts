/** The qemu-img option grammar: sizes, `-o` lists with `,,`, `--image-opts`, `json:`, getopt. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { all, has, last, parseArgs } from "../../ts/options/argv.js";
import { COMMAND_SPECS } from "../../ts/options/commands.js";
import { parseJsonFilename } from "../../ts/options/json.js";
import {
  encodeKeyValues,
  parseImageOpts,
  parseKeyValues,
  toRecord,
  wantsHelp,
} from "../../ts/options/keyvalue.js";
import { parseSize } from "../../ts/options/size.js";
import { hasPeer, run, tempDir } from "../helpers/peers.js";

describe("parseSize", () => {
  it.each([
    ["0", 0],
    ["512", 512],
    ["1k", 1024],
    ["1K", 1024],
    ["64k", 65536],
    ["1M", 1 << 20],
    ["1.5G", 1.5 * 2 ** 30],
    ["2T", 2 * 2 ** 40],
    ["1P", 2 ** 50],
    ["100b", 100],
  ])("%s = %d", (s, n) => {
    expect(parseSize(s)).toBe(n);
  });

  it.each(["", "-1", "1X", "abc", "1.5", "k", "20E"])("rejects %j with a typed error", (s) => {
    expect(() => parseSize(s)).toThrow(expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }));
  });

  it("is monotonic in the number for every suffix", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1000 }),
        fc.integer({ min: 0, max: 1000 }),
        fc.constantFrom("", "k", "M", "G"),
        (a, b, suf) => {
          return a <= b
            ? parseSize(`${a}${suf}`) <= parseSize(`${b}${suf}`)
            : parseSize(`${a}${suf}`) > parseSize(`${b}${suf}`);
        },
      ),
    );
  });

  const have = hasPeer("qemu-img");
  it.skipIf(!have)("agrees with qemu-img create on sizes", () => {
    const t = tempDir();
    try {
      for (const s of ["1k", "64k", "1M", "1.5M", "3G", "100"]) {
        const f = t.path("s.raw");
        expect(run("qemu-img", ["create", "-q", "-f", "raw", f, s]).status).toBe(0);
        const info = JSON.parse(run("qemu-img", ["info", "--output=json", f]).stdout);
        // raw rounds up to 512-byte sectors
        expect(info["virtual-size"]).toBe(Math.ceil(parseSize(s) / 512) * 512);
      }
    } finally {
      t.cleanup();
    }
  });
});

describe("key=value lists", () => {
  it("splits on commas and keeps ,, as a literal comma", () => {
    expect(parseKeyValues("a=1,b=x,,y,c=")).toEqual([
      { key: "a", value: "1" },
      { key: "b", value: "x,y" },
      { key: "c", value: "" },
    ]);
  });

  it("recognises help and ?", () => {
    expect(wantsHelp(parseKeyValues("help"))).toBe(true);
    expect(wantsHelp(parseKeyValues("cluster_size=4k,?"))).toBe(true);
    expect(wantsHelp(parseKeyValues("cluster_size=4k"))).toBe(false);
  });

  it("later values win when merged", () => {
    expect(toRecord(parseKeyValues("a=1,a=2"))).toEqual({ a: "2" });
  });

  it("round-trips any values through encode/parse", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.stringMatching(/^[a-z_][a-z0-9_.-]{0,8}$/), fc.string({ maxLength: 12 })), {
          maxLength: 6,
        }),
        (pairs) => {
          const kvs = pairs.filter(([k]) => k !== "help").map(([key, value]) => ({ key, value }));
          expect(parseKeyValues(encodeKeyValues(kvs))).toEqual(kvs);
        },
      ),
    );
  });

  it("crumples dotted keys for --image-opts and rejects conflicts", () => {
    expect(parseImageOpts("driver=qcow2,file.filename=a,,b.qcow2,file.locking=off")).toEqual({
      driver: "qcow2",
      file: { filename: "a,b.qcow2", locking: "off" },
    });
    expect(() => parseImageOpts("file=x,file.filename=y")).toThrow(
      expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }),
    );
    expect(() => parseKeyValues("=x")).toThrow(
      expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }),
    );
  });
});

describe("json: filenames", () => {
  it("accepts nested objects and dotted keys alike", () => {
    const a = parseJsonFilename('json:{"driver":"qcow2","file":{"driver":"file","filename":"x.qcow2"}}');
    const b = parseJsonFilename('json:{"driver":"qcow2","file.driver":"file","file.filename":"x.qcow2"}');
    expect(a).toEqual(b);
    expect(a).toEqual({ driver: "qcow2", file: { driver: "file", filename: "x.qcow2" } });
  });

  it("rejects malformed, non-object, too deep and too long input", () => {
    for (const s of [
      "json:{",
      "json:[1]",
      `json:${'{"a":'.repeat(40)}1${"}".repeat(40)}`,
      `json:{"a":"${"x".repeat(1 << 20)}"}`,
    ]) {
      expect(() => parseJsonFilename(s)).toThrow(
        expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }),
      );
    }
  });
});

describe("getopt", () => {
  it("parses clustered, attached and separate arguments, long options and permutation", () => {
    const p = parseArgs(
      ["-qpfqcow2", "in.qcow2", "-O", "raw", "--progress", "-m16", "out.raw", "--", "-x"],
      COMMAND_SPECS.convert,
    );
    expect(has(p, "q")).toBe(true);
    expect(has(p, "p")).toBe(true);
    expect(last(p, "f")).toBe("qcow2");
    expect(last(p, "O")).toBe("raw");
    expect(last(p, "m")).toBe("16");
    expect(p.positionals).toEqual(["in.qcow2", "out.raw", "-x"]);
  });

  it("collects repeated -o options and maps long names to letters", () => {
    const p = parseArgs(["-o", "a=1", "--options", "b=2", "--format", "qcow2", "x"], COMMAND_SPECS.create);
    expect(all(p, "o")).toEqual(["a=1", "b=2"]);
    expect(last(p, "f")).toBe("qcow2");
  });

  it("reports unknown options and missing arguments like getopt", () => {
    expect(() => parseArgs(["-Z"], COMMAND_SPECS.info)).toThrow("invalid option -- 'Z'");
    expect(() => parseArgs(["-f"], COMMAND_SPECS.info)).toThrow("option requires an argument -- 'f'");
    expect(() => parseArgs(["--nope"], COMMAND_SPECS.info)).toThrow("unrecognized option '--nope'");
    expect(() => parseArgs(["--output"], COMMAND_SPECS.info)).toThrow(
      "option '--output' requires an argument",
    );
  });
});
