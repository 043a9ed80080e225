/** Typed qemu-img command lines: each command's options, defaults and qemu-img's usage errors. */
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "../../ts/options/commands/index.js";

const err = (message: string) => expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT", message });

describe("parseCommandLine", () => {
  it("parses create with size, repeated -o and backing", () => {
    expect(
      parseCommandLine([
        "create",
        "-fqcow2",
        "-o",
        "cluster_size=4k",
        "-o",
        "lazy_refcounts",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "-u",
        "-q",
        "x.qcow2",
        "1.5G",
      ]),
    ).toEqual({
      cmd: "create",
      filename: "x.qcow2",
      format: "qcow2",
      size: 1.5 * 2 ** 30,
      options: [
        { key: "cluster_size", value: "4k" },
        { key: "lazy_refcounts", value: "on" },
      ],
      optionsString: "cluster_size=4k,lazy_refcounts",
      backingFile: "base.qcow2",
      backingFormat: "qcow2",
      unsafe: true,
      quiet: true,
      objects: [],
    });
    const bare = parseCommandLine(["create", "x.raw"]);
    expect(bare).toMatchObject({ cmd: "create", format: "raw" });
    expect(bare).not.toHaveProperty("size");
    expect(parseCommandLine(["create", "-f", "qcow2", "-o", "help"])).toEqual({
      cmd: "options-help",
      command: "create",
      format: "qcow2",
    });
  });

  it("parses info, check, compare and map", () => {
    expect(parseCommandLine(["info", "--output=json", "-b", "-U", "x"])).toEqual({
      cmd: "info",
      filename: "x",
      image: "x",
      imageOpts: false,
      output: "json",
      backingChain: true,
      forceShare: true,
      objects: [],
    });
    expect(parseCommandLine(["info", "--image-opts", "driver=qcow2,file.filename=x"])).toMatchObject({
      image: { driver: "qcow2", file: { filename: "x" } },
    });
    expect(
      parseCommandLine(["check", "-r", "leaks", "-q", "-T", "none", "--output", "json", "x"]),
    ).toMatchObject({
      cmd: "check",
      repair: "leaks",
      quiet: true,
      cache: "none",
      output: "json",
    });
    expect(parseCommandLine(["compare", "-f", "raw", "-F", "qcow2", "-s", "-p", "a", "b"])).toMatchObject({
      cmd: "compare",
      filenameA: "a",
      filenameB: "b",
      formatA: "raw",
      formatB: "qcow2",
      strict: true,
      progress: true,
    });
    expect(parseCommandLine(["map", "--start-offset=1M", "--max-length", "64k", "x"])).toMatchObject({
      cmd: "map",
      startOffset: 1 << 20,
      maxLength: 65536,
      output: "human",
    });
    expect(parseCommandLine(["map", "x"])).toMatchObject({ startOffset: 0 });
    expect(parseCommandLine(["map", "x"])).not.toHaveProperty("maxLength");
  });

  it("parses convert with defaults and every option", () => {
    const c = parseCommandLine(["convert", "a", "b", "c"]);
    expect(c).toMatchObject({
      cmd: "convert",
      sources: ["a", "b"],
      target: "c",
      targetFormat: "raw",
      parallel: 8,
      sparseSize: 4096,
      outOfOrder: false,
      noCreate: false,
      compress: false,
    });
    expect(
      parseCommandLine([
        "convert",
        "-f",
        "qcow2",
        "-O",
        "qcow2",
        "-c",
        "-p",
        "-W",
        "-m",
        "16",
        "-S",
        "0",
        "-B",
        "base",
        "-F",
        "raw",
        "-l",
        "snapshot.id=1,snapshot.name=s",
        "-r",
        "1M",
        "-T",
        "none",
        "-t",
        "writeback",
        "--object",
        "secret,id=k,data=x",
        "--bitmaps",
        "--skip-broken-bitmaps",
        "--salvage",
        "in",
        "out",
      ]),
    ).toMatchObject({
      srcFormat: "qcow2",
      targetFormat: "qcow2",
      compress: true,
      progress: true,
      outOfOrder: true,
      parallel: 16,
      sparseSize: 0,
      sparseSizeGiven: true,
      backing: "base",
      backingFormat: "raw",
      snapshot: { id: "1", name: "s" },
      rateLimit: 1 << 20,
      srcCache: "none",
      targetCache: "writeback",
      objects: [{ qomType: "secret", id: "k", props: { data: "x" } }],
      bitmaps: true,
      skipBrokenBitmaps: true,
      salvage: true,
    });
    expect(
      parseCommandLine([
        "convert",
        "-n",
        "--target-is-zero",
        "--target-image-opts",
        "a",
        "driver=raw,file.filename=b",
      ]),
    ).toMatchObject({
      noCreate: true,
      targetIsZero: true,
      targetImage: { driver: "raw", file: { filename: "b" } },
    });
    expect(parseCommandLine(["convert", "-n", "--target-image-opts", "a", "file=b"])).not.toHaveProperty(
      "targetFormat",
    );
    expect(parseCommandLine(["convert", "-O", "qcow2", "-o", "?"])).toEqual({
      cmd: "options-help",
      command: "convert",
      format: "qcow2",
    });
  });

  it("returns help, version and object help", () => {
    expect(parseCommandLine(["--help"])).toEqual({ cmd: "help" });
    expect(parseCommandLine(["-V"])).toEqual({ cmd: "version" });
    expect(parseCommandLine(["convert", "-h", "-Z"])).toEqual({ cmd: "help", topic: "convert" });
    expect(
      parseCommandLine(["rebase", "-u", "-c", "-F", "qcow2", "-b", "b.qcow2", "-T", "none", "t"]),
    ).toMatchObject({
      cmd: "rebase",
      unsafe: true,
      compress: true,
      backingFile: "b.qcow2",
      backingFormat: "qcow2",
      srcCache: "none",
      filename: "t",
    });
    expect(parseCommandLine(["commit", "-d", "-b", "base", "-r", "1M", "-q", "t"])).toMatchObject({
      cmd: "commit",
      drop: true,
      base: "base",
      rateLimit: 1 << 20,
      quiet: true,
    });
    expect(
      parseCommandLine(["convert", "-c", "--compress-threads=6", "--compress-level", "9", "a", "b"]),
    ).toMatchObject({ cmd: "convert", compress: true, compressThreads: 6, compressLevel: 9 });
    expect(parseCommandLine(["info", "--help"])).toEqual({ cmd: "help", topic: "info" });
    expect(parseCommandLine(["info", "--object", "help", "x"])).toEqual({ cmd: "object-help" });
  });

  it.each([
    [[], "Not enough arguments"],
    [["frobnicate"], "Command not found: frobnicate"],
    [["create"], "Expecting image file name"],
    [["create", "x", "1M", "extra"], "Unexpected argument: extra"],
    [["create", "x", "1.5"], "Invalid image size specified: '1.5'."],
    [["create", "x", "16E"], "Invalid image size specified. Must be between 0 and 9223372036854775807."],
    [["create", "-o", "a,", "x"], "Invalid option list: a,"],
    [["info"], "Expecting one image file name"],
    [["info", "a", "b"], "Expecting one image file name"],
    [["info", "--output=xml", "a"], "--output expects 'human' or 'json' not 'xml'"],
    [["info", "--image-opts", "-f", "raw", "a"], "--image-opts and --format are mutually exclusive"],
    [["check", "-r", "foo", "a"], "--repair (-r) expects 'leaks' or 'all' not 'foo'"],
    [["check", "-T", "bogus", "a"], "Invalid source cache option: bogus"],
    [["compare", "a"], "Expecting two image file names"],
    [["map", "--start-offset=x", "a"], "Invalid start offset specified: 'x'."],
    [
      ["map", "--max-length=-1", "a"],
      "Invalid max length specified. Must be between 0 and 9223372036854775807.",
    ],
    [["convert", "a"], "Must specify image file name"],
    [["convert", "--target-is-zero", "a", "b"], "--target-is-zero requires use of -n flag"],
    [["convert", "--target-image-opts", "a", "b"], "--target-image-opts requires use of -n flag"],
    [["convert", "-n", "-o", "cluster_size=4k", "a", "b"], "-o has no effect when skipping image creation"],
    [["convert", "-m", "0", "a", "b"], "Invalid number of coroutines specified. Must be between 1 and 16."],
    [["convert", "-m", "33", "a", "b"], "Invalid number of coroutines specified. Must be between 1 and 16."],
    [["convert", "-m", "4x", "a", "b"], "Invalid number of coroutines specified: '4x'."],
    [["convert", "-S", "x", "a", "b"], "Invalid buffer size for sparse output specified: 'x'."],
    [
      ["convert", "-S", "100", "a", "b"],
      "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).",
    ],
    [["convert", "-c", "-C", "a", "b"], "Cannot enable copy offloading when -c is used"],
    [["rebase", "a"], "Must specify backing file (-b) or use unsafe mode (-u)"],
    [["rebase", "-b", "x", "a", "b"], "Expecting one image file name"],
    [["rebase", "-t", "bogus", "-b", "x", "a"], "Invalid cache option: bogus"],
    [["commit", "a", "b"], "Expecting one image file name"],
    [["commit", "-r", "1x", "a"], "Invalid rate limit specified: '1x'."],
    [["convert", "--compress-level", "3", "a", "b"], "--compress-threads and --compress-level require -c"],
    [
      ["convert", "-c", "--compress-threads", "0", "a", "b"],
      "Invalid number of compression threads specified. Must be between 1 and 256.",
    ],
    [
      ["convert", "-c", "--compress-level", "23", "a", "b"],
      "Invalid compression level specified. Must be between 1 and 22.",
    ],
    [["convert", "-S", "4k", "-C", "a", "b"], "Cannot enable copy offloading when -S is used"],
    [["convert", "-C", "--salvage", "a", "b"], "Cannot use copy offloading in salvaging mode"],
    [["convert", "--skip-broken-bitmaps", "a", "b"], "Use of --skip-broken-bitmaps requires --bitmaps"],
    [["convert", "-r", "x", "a", "b"], "Invalid rate limit specified: 'x'."],
    [["convert", "-T", "bogus", "a", "b"], "Invalid source cache option: bogus"],
    [["convert", "-t", "bogus", "a", "b"], "Invalid cache option: bogus"],
    [["convert", "-Z", "a", "b"], "invalid option -- 'Z'"],
    [["convert", "--object", "secret,id=s", "a", "b"], "Either 'file' or 'data' must be provided"],
  ])("%j → %s", (argv, msg) => {
    expect(() => parseCommandLine(argv)).toThrow(err(msg));
  });
});
