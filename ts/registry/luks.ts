/** luks: a LUKS1 container as QEMU's luks driver (LUKS2 images are read too, beyond QEMU). */
import type { FormatEntry } from "./types.js";

const MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];

/** luks probes by the magic `LUKS\xba\xbe`, scoring 100 as QEMU's `block_crypto_probe_luks`. */
export const luksFormat: FormatEntry = {
  name: "luks",
  probe(head) {
    return head.length >= 8 && MAGIC.every((b, i) => head[i] === b) ? 100 : 0;
  },
  writable: true,
  supportsBacking: false,
  supportsCheck: false,
  // qemu-img 10's `-o help` list for luks.
  createOptions: [
    { name: "cipher-alg", type: "string", help: "Name of encryption cipher algorithm" },
    { name: "cipher-mode", type: "string", help: "Name of encryption cipher mode" },
    { name: "detached-header", type: "bool", help: "Create a detached LUKS header" },
    { name: "hash-alg", type: "string", help: "Name of encryption hash algorithm" },
    { name: "iter-time", type: "number", help: "Time to spend in PBKDF in milliseconds" },
    { name: "ivgen-alg", type: "string", help: "Name of IV generator algorithm" },
    { name: "ivgen-hash-alg", type: "string", help: "Name of IV generator hash algorithm" },
    { name: "key-secret", type: "string", help: "ID of the secret that provides the keyslot passphrase" },
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
