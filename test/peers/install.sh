#!/usr/bin/env bash
# Install the Debian peers the test suite runs against: qemu-utils (qemu-img, qemu-io, qemu-nbd;
# version 10 from backports on the project machines), the independent qcow2 readers 7zip (7zz) and
# python3-libqcow, the VHD/VDI reader python3-libvhdi, bximage (bochs) and cloop-utils
# (create_compressed_fs), and Debian bookworm's own qemu-img 7.2 unpacked beside the project under
# target/peers/qemu-7.2 (not installed: both versions are used side by side).
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
/usr/bin/python3 -c 'import pyvhdi' >/dev/null 2>&1 || need+=(python3-libvhdi)
# luks: cryptsetup (luksFormat/luksDump/open --test-passphrase on plain files), libluksde (an
# independent LUKS1 reader) and python3-cryptography (an independent AES-XTS for LUKS2 payloads).
command -v cryptsetup >/dev/null 2>&1 || need+=(cryptsetup-bin)
/usr/bin/python3 -c 'import pyluksde' >/dev/null 2>&1 || need+=(python3-libluksde)
/usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
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
