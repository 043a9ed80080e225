#!/usr/bin/env bash
# Builds the guest's initramfs for the NVMe-over-vfio tests (issue #9): a static busybox, the
# kernel modules needed to mount the host root over 9p (with a tmpfs overlay) and to bind NVMe
# controllers to vfio-pci, and test/vm/init as /init. Output: target/vm/initramfs.cpio.gz and
# target/vm/vmlinuz (a copy of the Debian kernel the modules belong to).
# Needs Debian's linux-image-amd64 and busybox-static (test/peers/install.sh installs them as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/vm
mkdir -p "$out"

kver=""
for d in /lib/modules/*; do
  v=$(basename "$d")
  [ -f "/boot/vmlinuz-$v" ] && [ -f "$d/modules.dep" ] && kver=$v
done
[ -n "$kver" ] || { echo "vm: no /boot/vmlinuz-* with modules (install linux-image-amd64)" >&2; exit 3; }
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q static || busybox=/bin/busybox
[ -x "$busybox" ] || { echo "vm: no static busybox (install busybox-static)" >&2; exit 3; }

# One build at a time (test files and benches may boot guests in parallel): the others wait
# here, then find the stamp current.
exec 9> "$out/.build.lock"
flock 9

stamp="$out/initramfs.stamp"
want="$kver $(sha256sum test/vm/init test/vm/build-initramfs.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/initramfs.cpio.gz" ]; then
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,host,newroot,mnt,lib/modules}
cp "$busybox" "$root/bin/busybox"
cp test/vm/init "$root/init"
chmod +x "$root/init"

# Modules in dependency order (modules.dep lists each module's dependencies after it).
moddir=/lib/modules/$kver
declare -A seen=()
order=()
add_module() { # path relative to $moddir
  local m=$1 dep
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  for dep in $(awk -v m="$m:" '$1 == m { for (i = 2; i <= NF; i++) print $i }' "$moddir/modules.dep"); do
    add_module "$dep"
  done
  order+=("$m")
}
for name in virtio_pci 9pnet_virtio 9p overlay vfio_iommu_type1 vfio-pci nvme; do
  path=$(awk -F: -v n="/$name.ko" 'substr($1, length($1) - length(n) + 1) == n { print $1; exit }' "$moddir/modules.dep")
  [ -n "$path" ] || { echo "vm: module $name not found for $kver" >&2; exit 3; }
  add_module "$path"
done
: > "$root/lib/modules/order"
for m in "${order[@]}"; do
  base=$(basename "$m")
  cp "$moddir/$m" "$root/lib/modules/$base"
  echo "$base" >> "$root/lib/modules/order"
done

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$out/initramfs.cpio.gz.$$"
mv "$out/initramfs.cpio.gz.$$" "$out/initramfs.cpio.gz"
cp "/boot/vmlinuz-$kver" "$out/vmlinuz.$$"
mv "$out/vmlinuz.$$" "$out/vmlinuz"
echo "$want" > "$stamp"
