/**
 * `qimg convert` and `qimg info` on the nvme:// protocol in a guest (one boot): a qcow2 image made
 * by qemu-img/qemu-io is converted onto the emulated controller's namespace (`-n`, so zero ranges
 * must be written as zeros over the garbage the host left there), inspected with `qimg info`
 * (URI and `json:` options forms), and converted back to qcow2. On the host after the VM exits:
 * `qemu-img compare` of the source with the backing file and with the round trip, `qemu-img check`.
 * A second controller takes `qimg bench -w` runs (the native loop, and the generic one for
 * unaligned requests); its backing file must hold the patterns after.
 */
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasPeer, run, runOk, tempDir } from "../helpers/peers.js";
import { type GuestRun, harnessFailure, REPO, runGuest, vmSkipReason } from "./vm.js";

const reason = vmSkipReason() ?? (hasPeer("qemu-io") ? undefined : "qemu-io missing");
if (reason) console.warn(`SKIP: NVMe convert tests: ${reason}`);
const MiB = 1 << 20;
const BDF = "0000:00:10.0";

describe.skipIf(reason !== undefined)("qimg convert to and from nvme://", () => {
  const t = tempDir("qimg-nvme-conv-");
  const src = t.path("disk.qcow2");
  const disk = t.path("n0.img");
  const disk2 = t.path("n1.img");
  let g: GuestRun;
  const out: Record<string, string> = {};

  beforeAll(() => {
    runOk("qemu-img", ["create", "-q", "-f", "qcow2", src, "32M"]);
    runOk("qemu-io", [
      "-f",
      "qcow2",
      "-c",
      "write -P 0x5a 0 1M",
      "-c",
      "write -P 0x33 5M 3M",
      "-c",
      "write -P 0x11 9437000 1000",
      "-c",
      "write -z 12M 1M",
      "-c",
      "write -P 0x7e 31M 1M",
      src,
    ]);
    // Garbage on the namespace: convert -n must overwrite every zero range.
    const fd = openSync(disk, "w");
    const ee = Buffer.alloc(MiB, 0xee);
    for (let p = 0; p < 32 * MiB; p += MiB) writeSync(fd, ee, 0, MiB, p);
    closeSync(fd);
    runOk("truncate", ["-s", "8M", disk2]);
    const qimg = `node ${REPO}/dist/cli/main.js`;
    const json = `json:{"file":{"driver":"nvme","device":"${BDF}","namespace":1}}`;
    g = runGuest(
      [disk, disk2],
      [
        "set -x",
        `${qimg} convert -n -f qcow2 -O raw /xfer/disk.qcow2 nvme://${BDF}/1 && echo CONVERT1=ok > /xfer/status`,
        `${qimg} info --output=json nvme://${BDF}/1 > /xfer/info.json`,
        `${qimg} info --output=json '${json}' > /xfer/info2.json`,
        `${qimg} info --output=json --image-opts driver=raw,file.driver=nvme,file.device=${BDF},file.namespace=1 > /xfer/info3.json`,
        `${qimg} convert -f raw -O qcow2 nvme://${BDF}/1 /xfer/back.qcow2 && echo CONVERT2=ok >> /xfer/status`,
        `${qimg} info nvme://${BDF}/9 2> /xfer/badns.txt; echo "BADNS=$?" >> /xfer/status`,
        `${qimg} bench -w -c 127 -d 16 -s 64k --pattern=0x42 -f raw nvme://0000:00:11.0/1 > /xfer/bench.txt && echo BENCH=ok >> /xfer/status`,
        // Unaligned requests: not the native loop, the generic path (read-modify-write).
        `${qimg} bench -w -c 3 -d 2 -s 1000 -o 7340032 --pattern=0x24 -f raw nvme://0000:00:11.0/1 > /xfer/bench2.txt && echo BENCH2=ok >> /xfer/status`,
        // Deeper than one queue's slots, and 512 KiB requests (one command each at QEMU's MDTS).
        `${qimg} bench -c 300 -d 64 -s 512k -f raw nvme://0000:00:11.0/1 > /xfer/bench3.txt && echo BENCH3=ok >> /xfer/status`,
        "",
      ].join("\n"),
      t.dir,
    );
    const why = harnessFailure(g);
    if (why) throw new Error(why);
    for (const f of [
      "status",
      "info.json",
      "info2.json",
      "info3.json",
      "badns.txt",
      "bench.txt",
      "bench2.txt",
      "bench3.txt",
    ]) {
      try {
        out[f] = readFileSync(t.path(f), "utf8");
      } catch {
        out[f] = "";
      }
    }
  }, 900_000);
  afterAll(() => t.cleanup());

  it("converts qcow2 onto the namespace, identical to the source", () => {
    expect(out.status, g.stderr.slice(-3000)).toContain("CONVERT1=ok");
    const r = run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", src, disk]);
    expect(r.stdout + r.stderr).toContain("Images are identical");
    expect(r.status).toBe(0);
  });

  it("qimg info reads the namespace (URI, json: and --image-opts forms)", () => {
    for (const f of ["info.json", "info2.json", "info3.json"]) {
      const i = JSON.parse(out[f]);
      expect(i.format).toBe("raw");
      expect(i["virtual-size"]).toBe(32 * MiB);
      expect(i.filename).toBe(`nvme://${BDF}/1`);
      expect(i.children[0].info.format).toBe("nvme");
    }
  });

  it("converts the namespace back to qcow2 (qemu-img check clean, compare identical)", () => {
    expect(out.status).toContain("CONVERT2=ok");
    expect(run("qemu-img", ["check", t.path("back.qcow2")]).status).toBe(0);
    const r = run("qemu-img", ["compare", src, t.path("back.qcow2")]);
    expect(r.stdout + r.stderr).toContain("Images are identical");
  });

  it("qimg bench -w on nvme:// writes every request to the namespace", () => {
    expect(out.status, out["bench.txt"]).toContain("BENCH=ok");
    expect(out["bench.txt"]).toMatch(
      /^Sending 127 write requests, 65536 bytes each, 16 in parallel \(starting at offset 0, step size 65536\)\nRun completed in [0-9.]+ seconds\.\n$/,
    );
    const data = readFileSync(disk2);
    expect(data.length).toBe(8 * MiB);
    // 127 requests of 64 KiB from offset 0: all but the last 64 KiB of the namespace; then the
    // unaligned run's 3 × 1000 bytes of 0x24 at 7 MiB.
    const want = (i: number) => (i >= 7 * MiB && i < 7 * MiB + 3000 ? 0x24 : i < 127 * 65536 ? 0x42 : 0);
    const bad = data.findIndex((b, i) => b !== want(i));
    expect(bad, `first unexpected byte: ${bad} (${data[bad]})`).toBe(-1);
  });

  it("qimg bench falls back to the generic loop for unaligned requests", () => {
    expect(out.status, out["bench2.txt"]).toContain("BENCH2=ok");
    expect(out["bench2.txt"]).toContain("Sending 3 write requests, 1000 bytes each, 2 in parallel");
  });

  it("qimg bench reads with more requests in flight than a queue has slots", () => {
    expect(out.status, out["bench3.txt"]).toContain("BENCH3=ok");
    expect(out["bench3.txt"]).toMatch(
      /^Sending 300 read requests, 524288 bytes each, 64 in parallel \(starting at offset 0, step size 524288\)\nRun completed in [0-9.]+ seconds\.\n$/,
    );
  });

  it("fails cleanly on a namespace that does not exist", () => {
    expect(out.status).toMatch(/BADNS=[1-9]/);
    expect(out["badns.txt"]).toContain("namespace 9");
  });
});
