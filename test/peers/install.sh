#!/usr/bin/env bash
# Install the Debian peers the test suite runs against (each check below names the package and the
# tool or module the tests use): qemu-utils 10 from backports on the project machines, independent
# readers and writers of each format, protocol servers and clients (nbdkit, nbd-server, libnbd-bin,
# gnutls-bin for TLS credentials), the NVMe test guest (test/vm/), and Debian bookworm's own
# qemu-img 7.2 unpacked beside the project under target/peers/qemu-7.2 (not installed: both
# versions are used side by side).
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
# fio: the kernel nvme driver's figures in the guest, next to qimg's (benches/nvme.mjs).
command -v fio >/dev/null 2>&1 || need+=(fio)
# The NVMe guest (test/vm/): QEMU's x86 system emulator, a Debian kernel and a static busybox;
# installed without recommends (qemu-system-x86 would otherwise pull in a graphics stack).
vm_need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || vm_need+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || vm_need+=(linux-image-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || vm_need+=(busybox-static)
/usr/bin/python3 -c 'import pyvmdk' >/dev/null 2>&1 || need+=(python3-libvmdk)
command -v bunzip2 >/dev/null 2>&1 || need+=(bzip2)
# luks: cryptsetup (luksFormat/luksDump/open --test-passphrase on plain files), libluksde (an
# independent LUKS1 reader) and python3-cryptography (an independent AES-XTS for LUKS2 payloads).
command -v cryptsetup >/dev/null 2>&1 || need+=(cryptsetup-bin)
/usr/bin/python3 -c 'import pyluksde' >/dev/null 2>&1 || need+=(python3-libluksde)
/usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
# encrypted secrets (keyid=): openssl enc makes the AES-256-CBC ciphertext.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# cache modes: strace shows the open flags (O_DIRECT, O_DSYNC) and counts the fdatasyncs.
command -v strace >/dev/null 2>&1 || need+=(strace)
q72=target/peers/qemu-7.2
if [ "$(id -u)" -ne 0 ]; then
  need+=("${vm_need[@]}")
  [ ${#need[@]} -eq 0 ] || echo "peers: not root; missing ${need[*]} — tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#need[@]} -gt 0 ] || [ ${#vm_need[@]} -gt 0 ] || [ ! -x "$q72/usr/bin/qemu-img" ]; then
  apt-get update -qq >/dev/null 2>&1 || true
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || echo "peers: apt-get install ${need[*]} failed" >&2
fi
if [ ${#vm_need[@]} -gt 0 ]; then
  # qemu-utils 10 (backports, on the project machines) breaks bookworm's qemu-system-common 7.2:
  # apt would remove qemu-img to install it. Take qemu-system-x86 from the same suite then.
  apt_src=()
  if qemu-img --version 2>/dev/null | grep -q 'bpo12'; then
    bpo=$(mktemp -d)
    mkdir -p "$bpo/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" > "$bpo/backports.list"
    apt_src=(-o Dir::Etc::sourcelist="$bpo/backports.list" -o Dir::State::lists="$bpo/lists")
    apt-get update -qq "${apt_src[@]}" >/dev/null 2>&1 || true
    vm_need=("${vm_need[@]/#qemu-system-x86/qemu-system-x86/bookworm-backports}")
  fi
  apt-get "${apt_src[@]}" install -y -qq --no-install-recommends --no-remove "${vm_need[@]}" >/dev/null 2>&1 ||
    echo "peers: apt-get install ${vm_need[*]} failed — the NVMe guest tests will skip" >&2
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
