/** qcow: QEMU's original copy-on-write format (version 1). */
import type { FormatEntry } from "./types.js";

const MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** qcow probes by magic `QFI\xfb` and version 1, scoring 100 as QEMU does. */
export const qcowFormat: FormatEntry = {
  name: "qcow",
  probe(head) {
    if (head.length < 8 || !MAGIC.every((b, i) => head[i] === b)) return 0;
    return new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(4) === 1 ? 100 : 0;
  },
  writable: true,
  supportsBacking: true,
  supportsCheck: false,
  createOptions: [
    { name: "backing_file", type: "string", help: "File name of a base image" },
    { name: "backing_fmt", type: "string", help: "Format of the backing image" },
    { name: "encrypt.format", type: "string", help: "Encrypt the image, format choices: 'aes'" },
    {
      name: "encrypt.key-secret",
      type: "string",
      help: "ID of the secret that provides the AES encryption key",
    },
    {
      name: "encryption",
      type: "bool",
      help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
    },
    { name: "size", type: "size", help: "Virtual disk size" },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
  ],
};
