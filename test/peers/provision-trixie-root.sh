#!/usr/bin/env bash
# Provisions the private Debian 13 (trixie) root that holds the project's real peers and
# guest parts: QEMU 11.1 from trixie-backports (its vfio-user-pci client and its in-process
# nvme/edu as benchmark references), the trixie kernel with its modules, busybox, fio and
# nvme-cli for the guest's initramfs.
#
# Idempotent: a root whose stamp names the same package set and whose QEMU reports the
# expected version is reused; otherwise it is built beside the final path and moved into
# place, so an interrupted run never leaves a half root behind. The root lives outside the
# clone (default /var/cache/wasmdev/trixie-root, or WASMDEV_TRIXIE_ROOT).
#
# Prints the root's path on stdout as its last line.
set -euo pipefail

ROOT="${WASMDEV_TRIXIE_ROOT:-/var/cache/wasmdev/trixie-root}"
QEMU_SERIES="11.1"
PACKAGES="qemu-system-x86/trixie-backports,qemu-system-common/trixie-backports,\
qemu-system-data/trixie-backports,seabios/trixie-backports,ipxe-qemu,busybox-static,\
linux-image-amd64,kmod,fio,nvme-cli,nodejs"
STAMP="packages=$PACKAGES"

qemu_version() {
  chroot "$1" qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9.]*\).*/\1/p'
}

if [ -f "$ROOT/.wasmdev-root" ] && [ "$(cat "$ROOT/.wasmdev-root")" = "$STAMP" ]; then
  case "$(qemu_version "$ROOT")" in
    "$QEMU_SERIES".*) echo "$ROOT"; exit 0 ;;
  esac
fi

if [ "$(id -u)" != 0 ]; then
  echo "provision-trixie-root: must run as root (mmdebstrap, chroot)" >&2
  exit 1
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap
fi

# The Debian mirror this machine already uses (the first non-security deb source).
mirror="$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
  } | grep -v security | grep -i debian | head -n1
)" || true
if [ -z "$mirror" ]; then
  echo "provision-trixie-root: no Debian mirror found in this machine's apt sources" >&2
  exit 1
fi

mkdir -p "$(dirname "$ROOT")"
tmp="$ROOT.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
echo "provision-trixie-root: building $ROOT from $mirror (about a minute)" >&2
mmdebstrap --quiet --variant=apt --include="$PACKAGES" trixie "$tmp" \
  "deb $mirror trixie main" "deb $mirror trixie-backports main" >&2
got="$(qemu_version "$tmp")"
case "$got" in
  "$QEMU_SERIES".*) ;;
  *) echo "provision-trixie-root: expected QEMU $QEMU_SERIES.x in the root, found '${got:-none}'" >&2; exit 1 ;;
esac
echo "$STAMP" > "$tmp/.wasmdev-root"
rm -rf "$ROOT"
mv "$tmp" "$ROOT"
trap - EXIT
echo "$ROOT"
