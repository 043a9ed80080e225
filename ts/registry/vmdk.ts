/** vmdk: VMware's virtual disk format (five subformats), as QEMU's vmdk driver. */
import type { FormatEntry } from "./types.js";

const DESCRIPTOR = "# Disk DescriptorFile";

/**
 * vmdk probes as QEMU's `vmdk_probe`: 100 for the sparse extent magic "KDMV" (or the old "COWD"),
 * 100 for a text descriptor starting with "# Disk DescriptorFile".
 */
export const vmdkFormat: FormatEntry = {
  name: "vmdk",
  probe(head) {
    if (head.length >= 4) {
      const m = String.fromCharCode(head[0], head[1], head[2], head[3]);
      if (m === "KDMV" || m === "COWD") return 100;
    }
    if (head.length < DESCRIPTOR.length) return 0;
    for (let i = 0; i < DESCRIPTOR.length; i++) if (head[i] !== DESCRIPTOR.charCodeAt(i)) return 0;
    return 100;
  },
  writable: true,
  supportsBacking: true,
  supportsCheck: true,
  createOptions: [
    {
      name: "adapter_type",
      type: "string",
      help: "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX",
    },
    { name: "backing_file", type: "string", help: "File name of a base image" },
    { name: "backing_fmt", type: "string", help: "Must be 'vmdk' if present" },
    { name: "compat6", type: "bool", help: "VMDK version 6 image" },
    { name: "hwversion", type: "string", help: "VMDK hardware version" },
    { name: "size", type: "size", help: "Virtual disk size" },
    {
      name: "subformat",
      type: "string",
      help: "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ",
    },
    { name: "toolsversion", type: "string", help: "VMware guest tools version" },
    {
      name: "zeroed_grain",
      type: "bool",
      help: "Enable efficient zero writes using the zeroed-grain GTE feature",
    },
    {
      name: "preallocation",
      type: "string",
      help: "Preallocation mode (allowed values: off, falloc, full)",
      default: "off",
      protocol: true,
    },
  ],
};
