/** qcow2: QEMU's copy-on-write format (version 2 and 3). */
import type { FormatEntry } from "./types.js";

const MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** qcow2 probes by magic `QFI\xfb` and version 2 or 3, scoring 100 as QEMU does. */
export const qcow2Format: FormatEntry = {
  name: "qcow2",
  probe(head) {
    if (head.length < 8 || !MAGIC.every((b, i) => head[i] === b)) return 0;
    const version = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(4);
    return version === 2 || version === 3 ? 100 : 0;
  },
  writable: true,
  supportsBacking: true,
  supportsCheck: true,
  createOptions: [
    { name: "size", type: "size", help: "Virtual disk size" },
    {
      name: "compat",
      type: "string",
      help: "qcow2 compatibility level (v2 [0.10] or v3 [1.1])",
      default: "v3",
    },
    { name: "backing_file", type: "string", help: "File name of a base image" },
    { name: "backing_fmt", type: "string", help: "Image format of the base image" },
    { name: "data_file", type: "string", help: "File name of an external data file" },
    {
      name: "data_file_raw",
      type: "bool",
      help: "The external data file must stay valid as a raw image",
      default: "off",
    },
    {
      name: "encryption",
      type: "bool",
      help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
    },
    { name: "encrypt.format", type: "string", help: "Encrypt the image, format choices: 'aes', 'luks'" },
    {
      name: "encrypt.key-secret",
      type: "string",
      help: "ID of secret providing qcow AES key or LUKS passphrase",
    },
    { name: "encrypt.cipher-alg", type: "string", help: "Name of encryption cipher algorithm" },
    { name: "encrypt.cipher-mode", type: "string", help: "Name of encryption cipher mode" },
    { name: "encrypt.ivgen-alg", type: "string", help: "Name of IV generator algorithm" },
    { name: "encrypt.ivgen-hash-alg", type: "string", help: "Name of IV generator hash algorithm" },
    { name: "encrypt.hash-alg", type: "string", help: "Name of encryption hash algorithm" },
    { name: "encrypt.iter-time", type: "number", help: "Time to spend in PBKDF in milliseconds" },
    { name: "cluster_size", type: "size", help: "qcow2 cluster size", default: "65536" },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, metadata, falloc, full)",
      default: "off",
    },
    { name: "lazy_refcounts", type: "bool", help: "Postpone refcount updates", default: "off" },
    {
      name: "refcount_bits",
      type: "number",
      help: "Width of a reference count entry in bits",
      default: "16",
    },
    {
      name: "compression_type",
      type: "string",
      help: "Compression method used for image cluster compression",
      default: "zlib",
    },
    { name: "extended_l2", type: "bool", help: "Extended L2 tables", default: "off" },
  ],
};
