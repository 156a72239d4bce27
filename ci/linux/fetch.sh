#!/usr/bin/env bash
# Puts the inputs of debian-cloud.toml into ci/linux/cache/: the kernel of Debian's
# `linux-image-*-cloud-amd64` and the real System.map from its `-dbg` package (the ordinary
# package ships only a stub). About 310 MB of downloads; extracted, 18 MB are kept.
# Without them the spec's checks are listed as skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f cache/vmlinuz ] && [ -f cache/System.map ]; then
  echo "fetch.sh: ci/linux/cache/ already has $(cat cache/VERSION 2>/dev/null || echo a kernel)"
  exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$pkg" ] || { echo "fetch.sh: apt knows no linux-image-cloud-amd64" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$pkg" "$pkg-dbg")
mkdir -p cache
dpkg-deb --fsys-tarfile "$work/${pkg}"_*.deb | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
dpkg-deb --fsys-tarfile "$work/${pkg}-dbg"_*.deb | tar -x -C "$work" --wildcards '*/System.map-*'
cp "$work"/boot/vmlinuz-* cache/vmlinuz
cp "$work"/usr/lib/debug/boot/System.map-* cache/System.map
echo "$pkg" > cache/VERSION
echo "fetch.sh: ci/linux/cache/ has the kernel and System.map of $pkg"
