#!/usr/bin/env bash
# A stock Linux booted to userspace by drvisor and by QEMU, on the same real SVM KVM, in one boot
# of the nested L1 guest (tests/nested-svm/boot-l1.sh): the newest /boot/vmlinuz-*-amd64 (the
# kernel L1 runs, or LINUX_KERNEL) with the busybox initramfs of tests/nested-svm/debian-kernel.sh,
# whose /init prints `drvisor-l2: userspace reached, ...` and writes 0 to port 0xf4.
#
#   bench/linux-boot-vs-qemu.sh [N] [OUTDIR]
#
# Inside L1, after one unmeasured warm-up boot of each, N boots each (default 5), alternating:
#   drvisor run --kernel K --initrd I --mem 512 --cmdline "C"
#   qemu-system-x86_64 -accel kvm -cpu host -m 512 -nographic -no-reboot -kernel K -initrd I \
#       -append "C" -device isa-debug-exit,iobase=0xf4,iosize=4
# (QEMU's default machine and SeaBIOS; isa-debug-exit lets /init's write end QEMU too), with C
# from LINUX_CMDLINE (default `console=ttyS0 earlyprintk=serial,ttyS0 nokaslr reboot=t`, as the
# CI's debian-kernel.sh). Wall time runs from just before the process starts to the marker line
# on its console, and to its exit; so are the milestones on the way (drvisor's line about the
# kernel's kallsyms, SeaBIOS's banner and its `Booting from ROM`, the decompressor's `KASLR
# disabled`, `Linux version`, `Run /init`), whose medians give each phase. Then one boot of each
# with `initcall_debug` whose /init prints the initcalls of 10 ms or more and the gaps of 100 ms
# or more in the kernel's log. Prints each median and the ratio drvisor/QEMU. Results in OUTDIR (default target/linux-boot-vs-qemu):
# results.txt, results.json, each boot's console (<vmm>-<run>.txt), host-load.txt (this host's
# load average every 15 s) and l1-console.txt. Exit status: 0 when every boot reached the marker
# and ended as /init asked, 1 when one did not, 90 if L1 could not be set up. DRVISOR_ALT=PATH
# adds a second drvisor binary (e.g. with a change under test), alternated with the other two.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
case "$n" in [1-9] | [1-9][0-9]) ;; *) echo "linux-boot-vs-qemu: N must be 1-99, not '$n'" >&2; exit 2 ;; esac
out=${2:-target/linux-boot-vs-qemu}
mkdir -p "$out"
out=$(realpath "$out")
cmdline=${LINUX_CMDLINE:-console=ttyS0 earlyprintk=serial,ttyS0 nokaslr reboot=t}

. tests/nested-svm/initramfs.sh
drvisor=$(release_drvisor)
rm -rf "$out/initramfs" "$out/initramfs-breakdown" "$out"/drvisor-*.txt "$out"/qemu-*.txt
marker_init "$out/initramfs"
initramfs "$out/initramfs" "$out/initramfs.cpio.gz" || exit 90
# The breakdown boot's /init: initcall_debug's lines are KERN_DEBUG, below the console's level,
# so they are read back from the kernel's log (log_buf_len on the command line keeps them all).
marker_init "$out/initramfs-breakdown" "$(cat <<'SH'
echo "drvisor-l2: initcalls of 10 ms or more (usecs, line):"
dmesg | awk '/initcall .* returned .* after [0-9]+ usecs/ { for (i = 1; i < NF; i++) if ($i == "after") { n++; sum += $(i + 1); if ($(i + 1) >= 10000) print $(i + 1), $0 } } END { printf "drvisor-l2: %d initcalls, %.3f s in all\n", n, sum / 1e6 }' | sort -rn
echo "drvisor-l2: gaps of 100 ms or more in the kernel's log:"
dmesg | awk -F'[][]' 'NF > 2 { t = $2 + 0; if (seen++ && t - p >= 0.1) printf "gap %.3f s after: %s\n    before: %s\n", t - p, prev, $0; p = t; prev = $0 }'
SH
)"
initramfs "$out/initramfs-breakdown" "$out/initramfs-breakdown.cpio.gz" || exit 90

# The kernel is chosen inside L1: boot-l1.sh installs one on a machine that has none.
kernel=${LINUX_KERNEL:-'$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)'}
( while :; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 15; done ) \
  > "$out/host-load.txt" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT
status=0
# XDG_CACHE_HOME: L1's root is this host's, read-only; drvisor keeps its probe cache in OUTDIR.
NESTED_TIMEOUT=${NESTED_TIMEOUT:-2400} tests/nested-svm/boot-l1.sh "$out" \
  "XDG_CACHE_HOME=$out/cache python3 $PWD/bench/linux-boot-runs.py $out $n $drvisor $kernel \
$out/initramfs.cpio.gz $out/initramfs-breakdown.cpio.gz '$cmdline' ${DRVISOR_ALT:-} \
> $out/results.txt 2>&1" \
  || status=$?
cat "$out/results.txt" 2>/dev/null || true
echo "this host's load average (1, 5, 15 min) during L1's boot: $(awk '{print $2}' "$out/host-load.txt" | sort -n | sed -n '1p;$p' | paste -sd- -) (1-min, min-max; $out/host-load.txt)"
for vmm in drvisor qemu; do
  f="$out/$vmm-breakdown.txt"
  [ -f "$f" ] || continue
  echo "--- $vmm, initcall_debug: the slow initcalls and the gaps in the kernel's log"
  sed -n '/^drvisor-l2: initcalls of/,/^drvisor-l2: powering off/p' "$f" | head -n 80
done
exit "$status"
