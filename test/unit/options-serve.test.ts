/** The typed parser of `serve` (qemu-nbd's options): defaults, long names, TLS objects, errors. */
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "../../ts/options/commands/index.js";

const err = (message: string | RegExp) =>
  expect.objectContaining({
    code: "ERR_QIMG_INVALID_ARGUMENT",
    message: typeof message === "string" ? message : expect.stringMatching(message),
  });

describe("serve command line", () => {
  it("has qemu-nbd's defaults", () => {
    expect(parseCommandLine(["serve", "d.qcow2"])).toEqual({
      cmd: "serve",
      filename: "d.qcow2",
      image: "d.qcow2",
      imageOpts: false,
      exportName: "",
      readOnly: false,
      bind: "0.0.0.0",
      port: 10809,
      persistent: false,
      shared: 1,
      allocationDepth: false,
      objects: [],
    });
  });

  it("takes qemu-nbd's letters and long names (and their prefixes)", () => {
    const short = parseCommandLine([
      "serve",
      "-f",
      "qcow2",
      "-x",
      "n",
      "-D",
      "desc",
      "-r",
      "-k",
      "/s",
      "-t",
      "-e",
      "0",
      "d",
    ]);
    const long = parseCommandLine([
      "serve",
      "--format=qcow2",
      "--export-name",
      "n",
      "--description=desc",
      "--read-only",
      "--socket=/s",
      "--persist",
      "--shared=0",
      "d",
    ]);
    for (const c of [short, long]) {
      expect(c).toMatchObject({
        format: "qcow2",
        exportName: "n",
        description: "desc",
        readOnly: true,
        socket: "/s",
        persistent: true,
        shared: 0,
      });
    }
    expect(parseCommandLine(["serve", "-b", "::1", "-p", "0", "d"])).toMatchObject({ bind: "::1", port: 0 });
    expect(parseCommandLine(["serve", "-A", "d"])).toMatchObject({ allocationDepth: true });
    expect(parseCommandLine(["serve", "--allocation-depth", "d"])).toMatchObject({ allocationDepth: true });
    expect(parseCommandLine(["serve", "--image-opts", "driver=raw,file.filename=x"])).toMatchObject({
      imageOpts: true,
      image: { driver: "raw", file: { filename: "x" } },
    });
  });

  it("resolves --tls-creds against --object", () => {
    expect(
      parseCommandLine([
        "serve",
        "--object",
        "tls-creds-x509,id=t,dir=/pki,endpoint=server,verify-peer=off",
        "--tls-creds=t",
        "d",
      ]),
    ).toMatchObject({ tls: { type: "x509", dir: "/pki", verifyPeer: false } });
    expect(
      parseCommandLine([
        "serve",
        "--object",
        "tls-creds-psk,id=t,dir=/k,endpoint=server",
        "--tls-creds",
        "t",
        "d",
      ]),
    ).toMatchObject({ tls: { type: "psk", dir: "/k", verifyPeer: true } });
  });

  it("fails with qemu-nbd's messages", () => {
    const bad: Array<[string[], string | RegExp]> = [
      [["-p", "65536", "d"], "Invalid port number '65536'"],
      [["-p", "x", "d"], "Invalid port number 'x'"],
      [["-e", "-1", "d"], "Invalid shared device number '-1'"],
      [["d", "e"], "Invalid number of arguments"],
      [[], "Invalid number of arguments"],
      [["--image-opts", "-f", "raw", "driver=raw"], "--image-opts and --format are mutually exclusive"],
      [["-x", "a".repeat(4097), "d"], /Export name is too long/],
      [["--tls-creds", "t", "d"], /No TLS credentials with id 't'/],
      [["--object", "tls-creds-psk,id=t,dir=/k", "--tls-creds", "t", "d"], /server endpoint/],
      [["--bogus", "d"], "unrecognized option '--bogus'"],
    ];
    for (const [args, msg] of bad)
      expect(() => parseCommandLine(["serve", ...args]), args.join(" ")).toThrow(err(msg));
  });
});
