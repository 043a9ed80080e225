/** The qemu-img option grammar: sizes, QemuOpts and keyval lists, `json:`, `--object`, getopt. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { all, has, last, parseArgs } from "../../ts/options/argv.js";
import { COMMAND_SPECS } from "../../ts/options/commands.js";
import { parseJsonFilename } from "../../ts/options/json.js";
import {
  accumulateOptions,
  encodeKeyValue,
  encodeKeyValues,
  hasHelpOption,
  parseImageOpts,
  parseKeyValues,
  parseKeyval,
  toRecord,
  wantsHelp,
} from "../../ts/options/keyvalue.js";
import { parseObject, parseObjects } from "../../ts/options/object.js";
import { cvtnum, parseSize, parseSizeBig } from "../../ts/options/size.js";
import { hasPeer, run, tempDir } from "../helpers/peers.js";

const invalid = (message?: string) =>
  expect.objectContaining(
    message === undefined
      ? { code: "ERR_QIMG_INVALID_ARGUMENT" }
      : { code: "ERR_QIMG_INVALID_ARGUMENT", message },
  );

describe("parseSize (qemu_strtosz)", () => {
  it.each([
    ["0", 0],
    ["512", 512],
    ["1k", 1024],
    ["1K", 1024],
    ["64k", 65536],
    ["1M", 1 << 20],
    ["1m", 1 << 20],
    ["1.5G", 1.5 * 2 ** 30],
    ["2T", 2 * 2 ** 40],
    ["1P", 2 ** 50],
    ["100b", 100],
    ["1B", 1],
    ["1.", 1],
    ["1.0", 1],
    ["1.k", 1024],
    [".5k", 512],
    ["+.5k", 512],
    [" 1k", 1024],
    ["\t1k", 1024],
    ["+1k", 1024],
    ["0x10", 16],
    ["0X10", 16],
    ["0x10b", 267],
    ["010", 10],
    ["1.2345678k", 1264],
    ["1.0005k", 1025],
    [".99999999999999999999k", 1024],
    ["1.99999999999999999999k", 2048],
    ["0.99999999999999999999", 1],
    ["0.0000001k", 0],
    ["000000000000000000000000000000001k", 1024],
  ])("%j = %d", (s, n) => {
    expect(parseSize(s)).toBe(n);
  });

  it.each([
    "",
    "1.5",
    "0.5",
    "1.0001",
    "k",
    "1X",
    "abc",
    "1kB",
    "1KiB",
    "1.5b",
    "1k ",
    "1 k",
    "1e3",
    "1e3k",
    "1.5e1k",
    "1.e3",
    "0x",
    "0xg",
    "0x1.5",
    "0x10k",
    "1.5.5k",
    ".",
    ".k",
    "nan",
    "inf",
    "1_0",
    "0b1",
    "1.5kk",
  ])("rejects %j as invalid", (s) => {
    expect(() => parseSize(s)).toThrow(
      expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT", kind: "invalid" }),
    );
  });

  it.each(["-1", "-0", " -1", "16E", "99999999999999999999999", "0x10000000000000000"])(
    "rejects %j as out of range",
    (s) => {
      expect(() => parseSizeBig(s)).toThrow(expect.objectContaining({ kind: "range" }));
    },
  );

  it("is exact past 2^53 as a bigint and refuses unsafe numbers", () => {
    expect(parseSizeBig("1.5E")).toBe(1729382256910270464n);
    // qemu-img create printed this size for the same input
    expect(parseSizeBig("7.9999999999999999E")).toBe(9223372036854775680n);
    expect(() => parseSize("1E")).toThrow(expect.objectContaining({ kind: "range" }));
  });

  it("honours a default suffix", () => {
    expect(parseSize("2", "M")).toBe(2 << 20);
    expect(parseSize("2b", "M")).toBe(2);
    expect(parseSize("1.5", "K")).toBe(1536);
  });

  it("words errors as qemu-img's cvtnum", () => {
    expect(() => cvtnum("image size", "1.5")).toThrow(invalid("Invalid image size specified: '1.5'."));
    expect(() => cvtnum("image size", "8E")).toThrow(
      invalid("Invalid image size specified. Must be between 0 and 9223372036854775807."),
    );
    expect(() => cvtnum("image size", "-1")).toThrow(
      invalid("Invalid image size specified. Must be between 0 and 9223372036854775807."),
    );
    expect(() => cvtnum("number of coroutines", "0", 1n, 16n, false)).toThrow(
      invalid("Invalid number of coroutines specified. Must be between 1 and 16."),
    );
    expect(cvtnum("number of coroutines", "0x10", 1n, 16n, false)).toBe(16);
    expect(cvtnum("number of coroutines", "010", 1n, 16n, false)).toBe(8);
  });

  it("is monotonic in the number for every suffix", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 100000 }),
        fc.integer({ min: 0, max: 100000 }),
        fc.constantFrom("", "b", "k", "M", "G", "T"),
        (a, b, suf) => {
          const [x, y] = [parseSizeBig(`${a}${suf}`), parseSizeBig(`${b}${suf}`)];
          expect(x < y ? -1 : x > y ? 1 : 0).toBe(Math.sign(a - b));
        },
      ),
    );
  });

  it("round-trips n×unit and decimal fractions of a unit", () => {
    const units = { b: 1, k: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 } as const;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4095 }),
        fc.constantFrom(...(Object.keys(units) as Array<keyof typeof units>)),
        (n, u) => {
          expect(parseSize(`${n}${u}`)).toBe(n * units[u]);
          expect(parseSize(String(n * units[u]))).toBe(n * units[u]);
        },
      ),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 0, max: 9999 }), (n, f) => {
        const frac = `${f}`.padStart(4, "0");
        expect(parseSize(`${n}.${frac}M`)).toBe(Math.round((n + Number(`0.${frac}`)) * 2 ** 20));
      }),
    );
  });

  const have = hasPeer("qemu-img");
  it.skipIf(!have)("agrees with qemu-img create on sizes and on what it refuses", () => {
    const t = tempDir();
    try {
      for (const s of [
        "1k",
        "64k",
        "1M",
        "1.5M",
        "3G",
        "100",
        "1.0005k",
        "0x10",
        ".5k",
        "1.",
        "1.5",
        "1e3",
        "1k ",
        "0x10k",
        "8E",
      ]) {
        const f = t.path("s.raw");
        const r = run("qemu-img", ["create", "-f", "raw", f, "--", s]);
        let ours: number | undefined;
        try {
          ours = cvtnum("image size", s);
        } catch (e) {
          expect(r.status, s).toBe(1);
          expect(r.stderr).toContain((e as Error).message);
          continue;
        }
        expect(r.status, s).toBe(0);
        expect(r.stdout).toContain(`size=${ours}`);
      }
    } finally {
      t.cleanup();
    }
  });
});

describe("QemuOpts lists (-o, --image-opts)", () => {
  it("splits on commas and keeps ,, as a literal comma", () => {
    expect(parseKeyValues("a=1,b=x,,y,c=")).toEqual([
      { key: "a", value: "1" },
      { key: "b", value: "x,y" },
      { key: "c", value: "" },
    ]);
    expect(parseKeyValues("")).toEqual([]);
    expect(parseKeyValues("a=b=c")).toEqual([{ key: "a", value: "b=c" }]);
  });

  it("reads bare names as on, no-names as off, and an implied first value", () => {
    expect(parseKeyValues("lazy_refcounts,nopreallocation")).toEqual([
      { key: "lazy_refcounts", value: "on" },
      { key: "preallocation", value: "off" },
    ]);
    expect(parseKeyValues("x,,y.qcow2,driver=qcow2", "file")).toEqual([
      { key: "file", value: "x,y.qcow2" },
      { key: "driver", value: "qcow2" },
    ]);
    expect(() => parseKeyValues("=x")).toThrow(invalid("Invalid parameter ''"));
    expect(() => parseKeyValues(",a=1")).toThrow(invalid("Invalid parameter ''"));
  });

  it("recognises help and ?", () => {
    expect(wantsHelp(parseKeyValues("help"))).toBe(true);
    expect(wantsHelp(parseKeyValues("cluster_size=4k,?"))).toBe(true);
    expect(wantsHelp(parseKeyValues("cluster_size=4k"))).toBe(false);
    expect(hasHelpOption("lazy_refcounts=on,help")).toBe(true);
    expect(hasHelpOption("a=help")).toBe(false);
    expect(hasHelpOption("a=x,,help")).toBe(false);
  });

  it("joins repeated -o like accumulate_options and refuses unjoinable lists", () => {
    expect(accumulateOptions([])).toBeUndefined();
    expect(accumulateOptions(["a=1", "b=x,,"])).toBe("a=1,b=x,,");
    expect(toRecord(parseKeyValues(accumulateOptions(["a=1", "a=2"])!))).toEqual({ a: "2" });
    for (const l of ["", ",a", "a,", "a,,,"]) {
      expect(() => accumulateOptions(["x=1", l])).toThrow(invalid(`Invalid option list: ${l}`));
    }
  });

  it("round-trips any values through encode/parse", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.stringMatching(/^[a-z_][a-z0-9_.-]{0,8}$/), fc.string({ maxLength: 12 })), {
          maxLength: 6,
        }),
        (pairs) => {
          const kvs = pairs.map(([key, value]) => ({ key, value }));
          expect(parseKeyValues(encodeKeyValues(kvs))).toEqual(kvs);
          for (const kv of kvs) expect(parseKeyValues(encodeKeyValue(kv))).toEqual([kv]);
        },
      ),
    );
  });

  it("crumples dotted keys for --image-opts and rejects conflicts", () => {
    expect(parseImageOpts("driver=qcow2,file.filename=a,,b.qcow2,file.locking=off")).toEqual({
      driver: "qcow2",
      file: { filename: "a,b.qcow2", locking: "off" },
    });
    expect(parseImageOpts("x.qcow2,id=foo")).toEqual({ file: "x.qcow2" });
    expect(parseImageOpts("driver=raw,nofile.locking")).toEqual({ driver: "raw", file: { locking: "off" } });
    expect(() => parseImageOpts("driver=raw,file=x,file.filename=y")).toThrow(
      invalid("Parameters 'file.*' used inconsistently"),
    );
    expect(() => parseImageOpts("a.b=2,a=1")).toThrow(invalid("Parameters 'a.*' used inconsistently"));
  });
});

describe("keyval (--object syntax)", () => {
  it("nests dotted keys, takes an implied key, and later scalars win", () => {
    expect(parseKeyval("secret,id=s0,a.b=1,a.c=x,,y,id=s1", "qom-type")).toEqual({
      dict: { "qom-type": "secret", id: "s1", a: { b: "1", c: "x,y" } },
      help: false,
    });
    expect(parseKeyval("help", "qom-type").help).toBe(true);
    expect(parseKeyval("secret,?", "qom-type")).toEqual({ dict: { "qom-type": "secret" }, help: true });
  });

  it.each([
    ["secret,id=s0,data", "Expected '=' after parameter 'data'"],
    ["secret,id=s0,1a=2", "Invalid parameter '1a'"],
    ["secret,,x,id=s0", "Invalid parameter ''"],
    ["secret,id=s0,a=1,a.b=2", "Parameters 'a.*' used inconsistently"],
    ["secret,id=s0,a.b=1,a=2", "Parameters 'a.*' used inconsistently"],
  ])("%j → %s", (s, msg) => {
    expect(() => parseKeyval(s, "qom-type")).toThrow(invalid(msg));
  });
});

describe("--object", () => {
  it("parses a secret into type, id and props", () => {
    expect(parseObject("secret,id=sec0,data=p,,w,format=raw")).toEqual({
      qomType: "secret",
      id: "sec0",
      props: { data: "p,w", format: "raw" },
    });
    expect(parseObject("qom-type=secret,id=s,file=/k")).toEqual({
      qomType: "secret",
      id: "s",
      props: { file: "/k" },
    });
    expect(parseObject("secret,help")).toEqual({ help: true, qomType: "secret" });
    expect(parseObject("help")).toEqual({ help: true });
  });

  it.each([
    ["secret", "Parameter 'id' is missing"],
    ["id=s0,data=x", "Parameter 'qom-type' is missing"],
    ["foo,id=s0", "Parameter 'qom-type' does not accept value 'foo'"],
    ["secret,id=s0", "Either 'file' or 'data' must be provided"],
    ["secret,id=s0,data=x,file=/k", "'file' and 'data' are mutually exclusive"],
    ["secret,id=s0,data=x,format=hex", "Parameter 'format' does not accept value 'hex'"],
    ["secret,id=s0,data=x,bogus=1", "Parameter 'bogus' is unexpected"],
    ["secret,id=s0,format=base64,data=@@", "Base64 data contains invalid characters"],
  ])("%j → %s", (s, msg) => {
    expect(() => parseObject(s)).toThrow(invalid(msg));
  });

  it("rejects bad and duplicate ids", () => {
    expect(() => parseObject("secret,id=0s,data=x")).toThrow(/^Parameter 'id' expects an identifier/);
    expect(() => parseObjects(["secret,id=s0,data=x", "secret,id=s0,data=y"])).toThrow(
      invalid("attempt to add duplicate property 's0' to object (type 'container')"),
    );
  });

  it("never puts secret data in an error message", () => {
    for (const s of [
      "secret,id=s0,data=top,secret",
      "secret,id=s0,data=hunter2,x=",
      "secret,id=s0,data=a,b.c",
    ]) {
      let msg = "";
      try {
        parseObject(s);
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).not.toBe("");
      for (const word of ["secret'", "hunter2", "b.c", "'b"]) expect(msg).not.toContain(word);
    }
  });
});

describe("json: filenames", () => {
  it("accepts nested objects and dotted keys alike", () => {
    const a = parseJsonFilename('json:{"driver":"qcow2","file":{"driver":"file","filename":"x.qcow2"}}');
    const b = parseJsonFilename('json:{"driver":"qcow2","file.driver":"file","file.filename":"x.qcow2"}');
    expect(a).toEqual(b);
    expect(a).toEqual({ driver: "qcow2", file: { driver: "file", filename: "x.qcow2" } });
  });

  it("keeps JSON types and arrays", () => {
    expect(parseJsonFilename('json:{"a":{"n":1,"t":true,"l":["x",{"y":2}]},"a.z":null}')).toEqual({
      a: { n: 1, t: true, l: ["x", { y: 2 }], z: null },
    });
  });

  it.each([
    ["json:{", /^Could not parse the JSON options: /],
    ["json:[1]", /^Invalid JSON object given$/],
    ["json:1", /^Invalid JSON object given$/],
    ['json:{"file":"x","file.filename":"y"}', /used inconsistently/],
    ['json:{"file":{"filename":"a"},"file.filename":"b"}', /Duplicate key 'file.filename'/],
    [`json:${'{"a":'.repeat(33)}1${"}".repeat(33)}`, /nests deeper than 32/],
    [`json:{"a":"${"x".repeat(1 << 20)}"}`, /longer than/],
    ["x.qcow2", /not a json: filename/],
  ])("rejects %#", (s, msg) => {
    expect(() => parseJsonFilename(s)).toThrow(msg);
  });

  it("accepts exactly 32 levels", () => {
    expect(() => parseJsonFilename(`json:${'{"a":'.repeat(32)}1${"}".repeat(32)}`)).not.toThrow();
    expect(() => parseJsonFilename('json:{"s":"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"}')).not.toThrow();
  });
});

describe("getopt", () => {
  it("parses clustered, attached and separate arguments, long options and permutation", () => {
    const p = parseArgs(
      ["-qpfqcow2", "in.qcow2", "-O", "raw", "--oob-writes", "-m16", "out.raw", "--", "-x"],
      COMMAND_SPECS.convert,
    );
    expect(has(p, "q")).toBe(true);
    expect(has(p, "p")).toBe(true);
    expect(has(p, "W")).toBe(true);
    expect(last(p, "f")).toBe("qcow2");
    expect(last(p, "O")).toBe("raw");
    expect(last(p, "m")).toBe("16");
    expect(p.positionals).toEqual(["in.qcow2", "out.raw", "-x"]);
  });

  it("collects repeated -o options, maps long names to letters, and takes unique prefixes", () => {
    const p = parseArgs(
      ["-o", "a=1", "--options", "b=2", "--format=qcow2", "--backing-f", "raw", "x"],
      COMMAND_SPECS.create,
    );
    expect(all(p, "o")).toEqual(["a=1", "b=2"]);
    expect(last(p, "f")).toBe("qcow2");
    expect(last(p, "F")).toBe("raw");
    expect(has(parseArgs(["--back", "x"], COMMAND_SPECS.info), "backing-chain")).toBe(true);
    expect(last(parseArgs(["--output", "json", "x"], COMMAND_SPECS.info), "output")).toBe("json");
  });

  it.each([
    ["info", ["-Z"], "invalid option -- 'Z'"],
    ["info", ["-f"], "option requires an argument -- 'f'"],
    ["info", ["--nope=1"], "unrecognized option '--nope=1'"],
    ["info", ["--output"], "option '--output' requires an argument"],
    ["info", ["--image-opts=x"], "option '--image-opts' doesn't allow an argument"],
    [
      "create",
      ["--b", "x"],
      "option '--b' is ambiguous; possibilities: '--backing' '--backing-format' '--backing-unsafe'",
    ],
    ["convert", ["--target", "x"], "option '--target' is ambiguous; possibilities:"],
  ])("%s %j → %s", (cmd, argv, msg) => {
    expect(() => parseArgs(argv, COMMAND_SPECS[cmd])).toThrow(
      expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }),
    );
    expect(() => parseArgs(argv, COMMAND_SPECS[cmd])).toThrow(msg);
  });

  it("stops at a listed key", () => {
    const p = parseArgs(["-U", "-h", "-Z"], COMMAND_SPECS.info, { stopAt: ["h"] });
    expect(p.stoppedAt).toBe("h");
  });
});
