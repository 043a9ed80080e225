#!/usr/bin/env bash
# Install the Debian peers the test suite runs against (qemu-utils: qemu-img, qemu-io, qemu-nbd).
# Only as root; otherwise the tests that need a missing peer skip with a printed reason.
set -u
need=()
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-nbd >/dev/null 2>&1 || need+=(qemu-utils)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "peers: not root; missing ${need[*]} — tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || echo "peers: apt-get install ${need[*]} failed" >&2
exit 0
