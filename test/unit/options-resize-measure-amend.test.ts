/** The typed parsers of resize, measure and amend: options, defaults and qemu-img's usage errors. */
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "../../ts/options/commands/index.js";
import { protectNegativeSize } from "../../ts/options/commands/resize.js";

const err = (message: string) => expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT", message });

describe("resize, measure and amend command lines", () => {
  it("parses resize with a relative size, preallocation and --shrink", () => {
    expect(
      parseCommandLine(["resize", "-f", "qcow2", "--preallocation=full", "-q", "x.qcow2", "+1G"]),
    ).toEqual({
      cmd: "resize",
      image: "x.qcow2",
      format: "qcow2",
      size: 1n << 30n,
      relative: "+",
      preallocation: "full",
      shrink: false,
      quiet: true,
      objects: [],
    });
    const c = parseCommandLine(["resize", "--shrink", "x.raw", "-512M"]);
    expect(c).toMatchObject({
      cmd: "resize",
      size: 512n << 20n,
      relative: "-",
      shrink: true,
      preallocation: "off",
    });
    expect(parseCommandLine(["resize", "x.raw", "--", "-1k"])).toMatchObject({ size: 1024n, relative: "-" });
  });

  it("keeps negative sizes away from getopt", () => {
    expect(protectNegativeSize(["--shrink", "a", "-1M"])).toEqual(["--shrink", "a", "--", "-1M"]);
    expect(protectNegativeSize(["a", "--", "-1M"])).toEqual(["a", "--", "-1M"]);
    expect(protectNegativeSize(["-q", "a", "1M"])).toEqual(["-q", "a", "1M"]);
  });

  it("parses measure from a size or an image", () => {
    expect(
      parseCommandLine([
        "measure",
        "--size",
        "1G",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        "-o",
        "refcount_bits=1",
      ]),
    ).toEqual({
      cmd: "measure",
      size: 1n << 30n,
      targetFormat: "qcow2",
      options: [
        { key: "cluster_size", value: "4k" },
        { key: "refcount_bits", value: "1" },
      ],
      output: "human",
      forceShare: false,
      objects: [],
    });
    expect(parseCommandLine(["measure", "--output=json", "-U", "-f", "qcow2", "a.qcow2"])).toMatchObject({
      image: "a.qcow2",
      format: "qcow2",
      targetFormat: "raw",
      output: "json",
      forceShare: true,
    });
    expect(parseCommandLine(["measure", "--size", "7E"])).toMatchObject({ size: 7n << 60n });
  });

  it("parses amend and its -o help", () => {
    expect(parseCommandLine(["amend", "-p", "-f", "qcow2", "-o", "compat=0.10", "x.qcow2"])).toEqual({
      cmd: "amend",
      image: "x.qcow2",
      format: "qcow2",
      options: [{ key: "compat", value: "0.10" }],
      help: false,
      progress: true,
      quiet: false,
      force: false,
      objects: [],
    });
    expect(parseCommandLine(["amend", "-f", "qcow2", "-o", "help"])).toMatchObject({
      cmd: "amend",
      help: true,
    });
  });

  it.each([
    [["resize"], "Expecting image file name and size"],
    [["resize", "x"], "Expecting image file name and size"],
    [["resize", "x", "1M", "y"], "Extra argument(s) in command line"],
    [["resize", "--preallocation=bogus", "x", "1M"], "Invalid preallocation mode 'bogus'"],
    [["measure"], "Either --size N or one filename must be specified."],
    [["measure", "--size", "1G", "x"], "--size N cannot be used together with a filename."],
    [["measure", "a", "b"], "At most one filename argument is allowed."],
    [["measure", "--size", "1G", "-l", "s"], "--image-opts, -f, and -l require a filename argument."],
    [["measure", "--size", "abc"], "Invalid image size specified: 'abc'."],
    [["measure", "--size", "1G", "-o", "help"], "Invalid parameter 'help'"],
    [["amend", "x"], "Must specify options (-o)"],
    [["amend", "-o", "compat=1.1"], "Expecting one image file name"],
    [["amend", "-o", "compat=1.1", "a", "b"], "Expecting one image file name"],
  ])("%j fails with qemu-img's message", (argv, message) => {
    expect(() => parseCommandLine(argv)).toThrow(err(message));
  });
});
