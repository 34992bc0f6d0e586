#!/usr/bin/env bash
# Runs a command with the Debian 13 root's Node (20.19, glibc 2.41) on this tree: jazzer.js's
# prebuilt libFuzzer engine needs glibc 2.38 and the host has 2.36. The tree is bind-mounted at
# /mnt/wasmdev inside the root, in a private mount namespace (the mounts vanish with the
# command), together with /proc (fd and mapping counts) and /dev. Runs as root (chroot).
#   usage: test/fuzz/in-root.sh COMMAND [ARGS...]   (run from anywhere; the cwd is the tree)
set -euo pipefail
TREE="$(cd "$(dirname "$0")/../.." && pwd)"
ROOT="${WASMDEV_TRIXIE_ROOT:-/var/cache/wasmdev/trixie-root}"
if [ ! -x "$ROOT/usr/bin/node" ]; then
  echo "test/fuzz/in-root.sh: no Node in $ROOT (run test/peers/provision-trixie-root.sh)" >&2
  exit 1
fi
mkdir -p "$ROOT/mnt/wasmdev"
exec unshare --mount --propagation private -- /bin/sh -c '
  set -e
  mount --bind "$1" "$2/mnt/wasmdev"
  mount -t proc proc "$2/proc"
  mount --bind /dev "$2/dev"
  mount -t tmpfs tmpfs "$2/tmp"
  shift 2
  exec chroot "'"$ROOT"'" /usr/bin/env -C /mnt/wasmdev "$@"
' in-root "$TREE" "$ROOT" "$@"
