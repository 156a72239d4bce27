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

# The start of the line /init (from `marker_init`) prints once userspace is reached, and the line
# it prints before its fallback, a reboot.
userspace_marker='drvisor-l2: userspace reached'
reboot_fallback='drvisor-l2: no exit port, rebooting (reboot=t: a triple fault ends the run)'
# The end of every /init here: `exit-port 0` (exit_port) ends the run with status 0; if it
# cannot, the fallback line, and a reboot that `reboot=t` makes a triple fault (drvisor exits
# 70, which no check accepts; a halt would wait for the timeout instead: HLT stays in KVM).
init_end="echo 'drvisor-l2: powering off through the exit port 0xf4'
/bin/exit-port 0
echo \"$reboot_fallback\"
reboot -f"

# `marker_init ROOT [COMMANDS]` writes ROOT/init, a static-busybox script: it prints
# `$userspace_marker, uname -r=..., uptime=...s, cpus=N` and the head of /proc/cpuinfo, runs the
# shell COMMANDS if given, then ends the run with status 0 (init_end).
marker_init() {
  local root=$1 commands=${2:-}
  mkdir -p "$root/bin"
  exit_port "$root/bin/exit-port"
  cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "$userspace_marker, uname -r=\$(uname -r), uptime=\$(cut -d' ' -f1 /proc/uptime)s, cpus=\$(grep -c ^processor /proc/cpuinfo)"
head -n 20 /proc/cpuinfo
$commands
$init_end
EOF
}

# `exit_port FILE`: a static program, `exit-port STATUS`, that ends a drvisor run with STATUS by
# writing it to drvisor's exit port 0xf4 (QEMU's with `-device isa-debug-exit,iobase=0xf4`)
# after ioperm(2), which needs only root: a shell cannot reach the port without /dev/port, and
# Debian's cloud kernel has no CONFIG_DEVPORT. It says why when it cannot.
exit_port() {
  static_c "$1" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>
int main(int argc, char **argv) {
  int status = argc > 1 ? atoi(argv[1]) : 0;
  if (ioperm(0xf4, 1, 1) != 0) {
    perror("drvisor-l2: exit-port: ioperm(0xf4)");
    return 1;
  }
  outb(status, 0xf4);
  fprintf(stderr, "drvisor-l2: exit-port: the run went on after the write to port 0xf4\n");
  return 1;
}
C
}

# `getppid_loop FILE`: a static program that calls getppid() N times (its first argument) and
# then prints `drvisor-l2: ARGV0 called getppid N times`.
getppid_loop() {
  static_c "$1" <<'C'
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
}

# `static_c FILE`: compiles the C source on standard input into the static program FILE (the
# guest's initramfs has no libc to link against).
static_c() {
  local src
  src=$(mktemp --suffix=.c)
  cat > "$src"
  cc -static -O2 -o "$1" "$src"
  rm -f "$src"
}

# `release_drvisor`: builds drvisor optimized (L1 sees this machine's files read-only, so
# everything is built here) and prints its path.
release_drvisor() {
  cargo build --release -p drvisor --bin drvisor >&2 || return 1
  echo "$(realpath "${CARGO_TARGET_DIR:-target}")/release/drvisor"
}
