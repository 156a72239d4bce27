# Sourced by the Debian-kernel scripts here. `initramfs ROOT OUT.cpio.gz` packs the directory
# ROOT, after putting a static busybox in ROOT/bin and making ROOT/{dev,proc,sys}, into a
# gzipped newc archive. ROOT/init is the caller's.
busybox_static() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }

initramfs() {
  local root=$1 archive=$2
  if ! busybox_static || ! command -v cpio >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static cpio >/dev/null
  fi
  busybox_static || { echo "initramfs: a static /bin/busybox is needed (busybox-static)" >&2; return 90; }
  mkdir -p "$root"/{bin,dev,proc,sys}
  cp /bin/busybox "$root/bin/"
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$archive"
}

# `getppid_loop FILE`: a static program that calls getppid() N times (its first argument) and
# then prints `drvisor-l2: ARGV0 called getppid N times`.
getppid_loop() {
  local src
  src=$(mktemp --suffix=.c)
  cat > "$src" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1;
  for (int i = 0; i < n; i++) syscall(SYS_getppid);
  printf("drvisor-l2: %s called getppid %d times\n", argv[0], n);
  return 0;
}
C
  cc -static -O2 -o "$1" "$src"
  rm -f "$src"
}

# `release_drvisor`: builds drvisor optimized (L1 sees this machine's files read-only, so
# everything is built here) and prints its path.
release_drvisor() {
  cargo build --release -p drvisor --bin drvisor >&2 || return 1
  echo "$(realpath "${CARGO_TARGET_DIR:-target}")/release/drvisor"
}
