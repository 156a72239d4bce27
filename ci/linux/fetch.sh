#!/usr/bin/env bash
# Puts two stock Debian kernels into ci/linux/, each beside the real System.map of its -dbg
# package (the ordinary package ships only a stub):
#   cache/            bookworm's linux-image-cloud-amd64 (Linux 6.1), which debian-cloud.toml runs;
#   cache-backports/  bookworm-backports' (Linux 6.12), whose symbols and task layout the unit
#                     and end-to-end tests read as well.
# About 310 MB of downloads each; extracted, about 20 MB each are kept. Without them the tests
# and the spec's checks that need them are listed as skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")"

# fetch DIR [APT_TARGET_RELEASE]
fetch() {
  local dir=$1 release=${2:-} pkg work
  if [ -f "$dir/vmlinuz" ] && [ -f "$dir/System.map" ]; then
    echo "fetch.sh: ci/linux/$dir/ already has $(cat "$dir/VERSION" 2>/dev/null || echo a kernel)"
    return 0
  fi
  pkg=$(apt-cache ${release:+-t "$release"} depends linux-image-cloud-amd64 2>/dev/null \
    | awk '/Depends: linux-image-/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "fetch.sh: apt knows no linux-image-cloud-amd64${release:+ in $release}" >&2; return 1; }
  work=$(mktemp -d)
  (cd "$work" && apt-get download "$pkg" "$pkg-dbg") || { rm -rf "$work"; return 1; }
  mkdir -p "$dir"
  dpkg-deb --fsys-tarfile "$work/${pkg}"_*.deb | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
  dpkg-deb --fsys-tarfile "$work/${pkg}-dbg"_*.deb | tar -x -C "$work" --wildcards '*/System.map-*'
  cp "$work"/boot/vmlinuz-* "$dir/vmlinuz"
  cp "$work"/usr/lib/debug/boot/System.map-* "$dir/System.map"
  echo "$pkg" > "$dir/VERSION"
  rm -rf "$work"
  echo "fetch.sh: ci/linux/$dir/ has the kernel and System.map of $pkg"
}

status=0
fetch cache || status=1
{ ../debian-backports.sh && fetch cache-backports bookworm-backports; } || status=1
exit $status
