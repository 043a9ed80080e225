/** vmdk probing (QEMU's scores) and the extent-name gate, without peers. */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { admitExtent } from "../../ts/graph/extents.js";
import { getFormat, probeFormat } from "../../ts/registry/index.js";

const SAMPLES = fileURLToPath(new URL("../../../shared/samples", import.meta.url));

describe("vmdk registry", () => {
  it("probes the KDMV magic and text descriptors as QEMU does", () => {
    const f = getFormat("vmdk");
    expect(f.probe(Buffer.from("KDMV\x01\0\0\0"), "x")).toBe(100);
    expect(f.probe(Buffer.from("# Disk DescriptorFile\nversion=1\n"), "x")).toBe(100);
    expect(f.probe(Buffer.from("# Disk Descriptor"), "x")).toBe(0);
    expect(f.probe(Buffer.alloc(512), "x.vmdk")).toBe(0);
    expect(probeFormat(Buffer.from("# Disk DescriptorFile\n"), "x")).toBe("vmdk");
  });

  it.skipIf(!existsSync(SAMPLES))("probes the vmdk samples as vmdk", () => {
    for (const rel of [
      "qemu-iotests/iotest-version3.vmdk",
      "generated/bximage-vmware4.vmdk",
      "qemu-iotests/afl9.vmdk",
    ]) {
      const head = readFileSync(`${SAMPLES}/${rel}`).subarray(0, 2048);
      expect(probeFormat(head, "noext"), rel).toBe("vmdk");
    }
  });

  it("admits plain extent names and refuses absolute and .. names unless policy all", () => {
    expect(admitExtent("d-flat.vmdk", "/imgs/d.vmdk", "files")).toBe("/imgs/d-flat.vmdk");
    expect(admitExtent("sub/d-s001.vmdk", "/imgs/d.vmdk", "files")).toBe("/imgs/sub/d-s001.vmdk");
    for (const bad of ["/etc/passwd", "../secret", "a/../../b"]) {
      expect(() => admitExtent(bad, "/imgs/d.vmdk", "files")).toThrow(/outside its directory/);
    }
    expect(admitExtent("/data/x.raw", "/imgs/d.vmdk", "all")).toBe("/data/x.raw");
    expect(() => admitExtent("d-flat.vmdk", "/imgs/d.vmdk", "none")).toThrow(/untrusted profile/);
  });
});
