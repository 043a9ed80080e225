#!/usr/bin/env bash
# Install the Debian peers the test suite runs against: qemu-utils (qemu-img, qemu-io, qemu-nbd;
# version 10 from backports on the project machines), the independent qcow2 readers 7zip (7zz) and
# python3-libqcow, the VHD/VDI reader python3-libvhdi, bximage (bochs) and cloop-utils
# (create_compressed_fs), and Debian bookworm's own qemu-img 7.2 unpacked beside the project under
# target/peers/qemu-7.2 (not installed: both versions are used side by side). The NBD client's
# peers: nbdkit (memory, file and its filters), nbd-server, libnbd-bin (nbdinfo, nbdcopy) and
# gnutls-bin (certtool and psktool make the TLS credentials of the tests);
# libnbd-bin and gnutls-bin are also the clients of the `qimg serve` tests.
# Only as root; otherwise the tests that need a missing peer skip with a printed reason.
set -u
cd "$(dirname "$0")/../.."
need=()
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-nbd >/dev/null 2>&1 || need+=(qemu-utils)
command -v 7zz >/dev/null 2>&1 || need+=(7zip)
command -v bximage >/dev/null 2>&1 || need+=(bximage)
command -v create_compressed_fs >/dev/null 2>&1 || need+=(cloop-utils)
/usr/bin/python3 -c 'import pyqcow' >/dev/null 2>&1 || need+=(python3-libqcow)
command -v nbdkit >/dev/null 2>&1 || need+=(nbdkit)
command -v nbd-server >/dev/null 2>&1 || need+=(nbd-server)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v certtool >/dev/null 2>&1 || need+=(gnutls-bin)
/usr/bin/python3 -c 'import pyvhdi' >/dev/null 2>&1 || need+=(python3-libvhdi)
q72=target/peers/qemu-7.2
if [ "$(id -u)" -ne 0 ]; then
  [ ${#need[@]} -eq 0 ] || echo "peers: not root; missing ${need[*]} — tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ] || [ ! -x "$q72/usr/bin/qemu-img" ]; then
  apt-get update -qq >/dev/null 2>&1 || true
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || echo "peers: apt-get install ${need[*]} failed" >&2
fi
if [ ! -x "$q72/usr/bin/qemu-img" ]; then
  # The newest 7.2 build the archive offers (bookworm's own qemu-utils).
  ver=$(apt-cache madison qemu-utils 2>/dev/null | awk -F'|' '$2 ~ /1:7\.2/ { gsub(/ /, "", $2); print $2; exit }')
  tmp=$(mktemp -d)
  if [ -n "$ver" ] && (cd "$tmp" && apt-get download -qq "qemu-utils=$ver" >/dev/null 2>&1); then
    mkdir -p "$q72" && dpkg -x "$tmp"/qemu-utils_*.deb "$q72"
  else
    echo "peers: could not fetch qemu-utils 7.2 — the 7.2 interop tests will skip" >&2
  fi
  rm -rf "$tmp"
fi
exit 0
