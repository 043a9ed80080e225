#!/usr/bin/env bash
# Boots the NVMe test guest once and runs a shell script in it (issue #9).
#   test/vm/run.sh [--nvme FILE]... [--kernel-nvme] [--iommu-translate] [--mem MiB] [--timeout S] SCRIPT XFERDIR
# Each --nvme FILE becomes an emulated NVMe controller backed by the raw FILE (discard=unmap), at PCI
# addresses 0000:00:10.0, 0000:00:11.0, … in order, bound to vfio-pci in the guest (or to the
# kernel's nvme driver with --kernel-nvme). The guest kernel runs its own devices' DMA in IOMMU
# passthrough (iommu=pt) unless --iommu-translate asks for translated DMA (vfio always
# translates). The guest sees the host root read-only (tmpfs overlay), and XFERDIR read-write at /xfer; SCRIPT is copied to XFERDIR/run.sh and run there by test/vm/init.
# Results: XFERDIR/{stdout,stderr,rc} and XFERDIR/console (the serial console). Exit status: the
# script's, or 124 on timeout, or 3 when the VM cannot be built (missing kernel/busybox/qemu).
# TCG only: /dev/kvm may exist here but not work (../shared/oracles.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
nvme=()
kernel_nvme=0
iommu_pt=1
mem=1024
timeout_s=300
while [ $# -gt 2 ]; do
  case $1 in
  --nvme) nvme+=("$2"); shift 2 ;;
  --kernel-nvme) kernel_nvme=1; shift ;;
  --iommu-translate) iommu_pt=0; shift ;;
  --mem) mem=$2; shift 2 ;;
  --timeout) timeout_s=$2; shift 2 ;;
  *) echo "vm: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: test/vm/run.sh [--nvme FILE]... [--kernel-nvme] SCRIPT XFERDIR" >&2; exit 2; }
script=$1
xfer=$2
command -v qemu-system-x86_64 >/dev/null || { echo "vm: qemu-system-x86_64 missing (qemu-system-x86)" >&2; exit 3; }
bash test/vm/build-initramfs.sh || exit 3

mkdir -p "$xfer"
cp "$script" "$xfer/run.sh"
rm -f "$xfer/rc" "$xfer/stdout" "$xfer/stderr"
args=(-accel tcg -cpu max -m "$mem" -smp 1 -nographic -no-reboot -nodefaults -serial stdio
  -machine q35 -device intel-iommu,intremap=on,caching-mode=on
  -kernel target/vm/vmlinuz -initrd target/vm/initramfs.cpio.gz
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -fsdev "local,id=xfer,path=$xfer,security_model=none"
  -device virtio-9p-pci,fsdev=xfer,mount_tag=xfer)
append="console=ttyS0 intel_iommu=on panic=-1 quiet loglevel=3"
[ "$iommu_pt" = 1 ] && append="$append iommu=pt"
[ "$kernel_nvme" = 1 ] && append="$append qimg.kernelnvme=1"
i=0
for f in "${nvme[@]}"; do
  args+=(-drive "file=$f,if=none,id=n$i,format=raw,discard=unmap,cache=writeback"
    -device "nvme,drive=n$i,serial=deadbeef$i,addr=$(printf 0x%x $((16 + i)))")
  i=$((i + 1))
done
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 "${args[@]}" -append "$append" \
  < /dev/null > "$xfer/console" 2>&1
qrc=$?
[ "$qrc" -eq 124 ] && { echo "vm: timed out after ${timeout_s}s" >&2; exit 124; }
[ -f "$xfer/rc" ] || { echo "vm: guest ended without a result (qemu exit $qrc); console:" >&2; tail -20 "$xfer/console" >&2; exit 3; }
exit "$(cat "$xfer/rc")"
