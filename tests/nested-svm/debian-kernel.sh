#!/usr/bin/env bash
# A stock Debian kernel booted by drvisor to userspace on a real SVM KVM (inside the nested L1
# guest of boot-l1.sh). Shows that drvisor's PC setup (the VMX real-mode pages, PIT, LINT0/LINT1,
# boot MSRs, e820, CPUID) is enough for a real kernel on a real host; our own KVM (kvm_pvm)
# cannot run one to the end.
#
#   tests/nested-svm/debian-kernel.sh [OUTDIR] [-- DRVISOR-RUN-FLAGS...]
#
# Builds drvisor here (optimized) and a tiny initramfs whose /init is static busybox: it prints
# `drvisor-l2: userspace reached, uname -r=...` and the head of /proc/cpuinfo, then ends the run
# by writing 0 to drvisor's exit port 0xf4 (initramfs.sh's exit-port). The kernel is the newest
# /boot/vmlinuz-*-amd64 (the one L1 boots too), or DEBIAN_KERNEL; its command line
# DEBIAN_CMDLINE (default `console=ttyS0 nokaslr quiet`; see debian-comm.sh for `quiet`), plus
# `reboot=t`. Flags after `--` go to `drvisor run` (e.g. `--cpuid host`). Results land in OUTDIR
# (default target/nested-svm-kernel): console.txt (the guest's serial console and drvisor's
# messages) and l1-console.txt. DEBIAN_CPUS=N also requires `cpus=N` in the marker line (e.g.
# `DEBIAN_CPUS=2 tests/nested-svm/debian-kernel.sh OUT -- --vcpus 2`). Exit status: 0 when the
# marker line came (with DEBIAN_CPUS's count, if given) and drvisor ended as /init asked (status
# 0), 1 when not, 90 if L1 could not be set up or died before drvisor ended.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/nested-svm-kernel}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
out=$(realpath "$out")
. tests/nested-svm/initramfs.sh
# /init (marker_init) prints the marker line, then writes 0 to the exit port.
marker=$userspace_marker
cpus=${DEBIAN_CPUS:-}
case "$cpus" in
  '' | [1-9] | [1-9][0-9] | [1-9][0-9][0-9]) ;;
  *) echo "debian-kernel: DEBIAN_CPUS must be a CPU count, not '$cpus'" >&2; exit 2 ;;
esac

drvisor=$(release_drvisor)
root="$out/initramfs"
rm -rf "$root"
marker_init "$root"
initramfs "$root" "$out/initramfs.cpio.gz" || exit 90

# The kernel is chosen inside L1: boot-l1.sh installs one on a machine that has none.
kernel=${DEBIAN_KERNEL:-'$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)'}
cmdline=${DEBIAN_CMDLINE:-console=ttyS0 nokaslr quiet}
extra=
[ $# -gt 0 ] && extra=$(printf '%q ' "$@")
rm -f "$out/console.txt"
start=$(date +%s)
status=0
# 300 s bounds the guest (a run takes under 45 s with L1's boot); L1 gets the rest.
NESTED_TIMEOUT=${NESTED_TIMEOUT:-900} tests/nested-svm/boot-l1.sh "$out" \
  "timeout 300 $drvisor run --kernel $kernel --initrd $out/initramfs.cpio.gz --mem 512 \
--cmdline '$cmdline reboot=t' $extra> $out/console.txt 2>&1" || status=$?
echo "debian-kernel: drvisor exited $status after $(( $(date +%s) - start )) s (L1's boot included)"
tail -n 25 "$out/console.txt" 2>/dev/null || true
[ "$status" -eq 90 ] && exit 90
if grep -q "^$marker" "$out/console.txt" && [ "$status" -eq 0 ]; then
  # The kernel's own console lines can land mid-line; the marker ends where one begins.
  line=$(sed -n "s/^\($marker[^[]*\).*/\1/p" "$out/console.txt" | head -n 1)
  if [ -n "$cpus" ] && ! grep -q "cpus=$cpus\b" <<<"$line"; then
    echo "debian-kernel: FAIL: DEBIAN_CPUS=$cpus, but the marker line says: $line" >&2
    exit 1
  fi
  echo "debian-kernel: PASS: $line"
  exit 0
fi
echo "debian-kernel: FAIL: no \`$marker\` line, or drvisor's status is not the end /init asked for; see $out/console.txt" >&2
exit 1
