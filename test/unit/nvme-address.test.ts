/** NVMe addresses as QEMU takes them: `nvme://DDDD:BB:SS.F/NS` and `file.driver=nvme` options. */
import { describe, expect, it } from "vitest";
import { isNvmeString, parseNvmeOptions, parseNvmeString } from "../../ts/graph/nvme.js";
import { toNodeSpec } from "../../ts/graph/open.js";

describe("nvme addresses", () => {
  it("parses the URI form", () => {
    expect(isNvmeString("nvme://0000:00:10.0/1")).toBe(true);
    expect(isNvmeString("nbd://x/1")).toBe(false);
    expect(parseNvmeString("nvme://0000:06:0D.0/2")).toEqual({ device: "0000:06:0d.0", namespace: 2 });
  });

  it("refuses malformed URIs with typed errors", () => {
    for (const bad of [
      "nvme://0000:00:10.0",
      "nvme://0000:00:10.0/",
      "nvme://0000:00:10.0/0",
      "nvme://0000:00:10.0/x",
      "nvme://00:10.0/1",
      "nvme://../../etc/1",
    ]) {
      expect(() => parseNvmeString(bad), bad).toThrow(
        expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }),
      );
    }
    expect(() => parseNvmeString("nvme://0000:00:10.0")).toThrow(/Namespace id is missing/);
  });

  it("parses the options form (namespace 1 by default, as QEMU)", () => {
    expect(parseNvmeOptions({ driver: "nvme", device: "0000:00:11.0" })).toEqual({
      device: "0000:00:11.0",
      namespace: 1,
    });
    expect(parseNvmeOptions({ driver: "nvme", device: "0000:00:11.0", namespace: "3" }).namespace).toBe(3);
    expect(() => parseNvmeOptions({ driver: "nvme" })).toThrow(
      expect.objectContaining({ code: "ERR_QIMG_INVALID_ARGUMENT" }),
    );
  });

  it("normalizes both forms into an nvme protocol node", () => {
    expect(toNodeSpec("nvme://0000:00:10.0/1")).toEqual({
      filename: "nvme://0000:00:10.0/1",
      nvme: { device: "0000:00:10.0", namespace: 1 },
    });
    const n = toNodeSpec({ driver: "raw", file: { driver: "nvme", device: "0000:00:10.0", namespace: 2 } });
    expect(n.filename).toBe("nvme://0000:00:10.0/2");
    expect(n.nvme).toEqual({ device: "0000:00:10.0", namespace: 2 });
    expect(n.format).toBe("raw");
  });
});
