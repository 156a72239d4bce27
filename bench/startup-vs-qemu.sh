#!/bin/bash
# Start-up, process start to exit, in one run: `drvisor run --scenario hello` (warm probe cache)
# against QEMU booting the same test-guest ELF with `-accel kvm -M q35 -kernel`, alternating,
# N runs each. Prints each median (ms) and the ratio drvisor / QEMU.
# Usage (from the project root, after `cargo build --release`):
#   bench/startup-vs-qemu.sh [N]
# Default N=7. Needs qemu-system-x86_64 for the ratio (without it, drvisor's median alone).
set -u
N=${1:-7}
ELF=${ELF:-$(ls -t target/release/build/drvisor-*/out/guest/release/drvisor-guest 2>/dev/null | head -1)}
DRV=${DRV:-target/release/drvisor}
[ -f "$ELF" ] || { echo "no guest ELF (build first, or set ELF=)"; exit 2; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# Warm the probe cache (and the page cache) once, unmeasured.
"$DRV" run --scenario hello >/dev/null 2>&1
have_qemu=$(command -v qemu-system-x86_64 >/dev/null && echo 1 || echo 0)
d=(); q=()
for _ in $(seq "$N"); do
  s=$(date +%s%N); "$DRV" run --scenario hello >/dev/null 2>&1; d+=("$(ms "$s")")
  if [ "$have_qemu" = 1 ]; then
    s=$(date +%s%N)
    qemu-system-x86_64 -accel kvm -M q35 -m 64 -kernel "$ELF" -append "scenario=hello" \
      -nographic -no-reboot -nodefaults -display none -monitor none -serial null \
      -device isa-debug-exit,iobase=0xf4,iosize=4 >/dev/null 2>&1
    q+=("$(ms "$s")")
  fi
done
dm=$(printf '%s\n' "${d[@]}" | median)
echo "drvisor run --scenario hello: median ${dm} ms of $N (${d[*]})"
if [ "$have_qemu" = 1 ]; then
  qm=$(printf '%s\n' "${q[@]}" | median)
  echo "qemu -accel kvm -M q35 -kernel: median ${qm} ms of $N (${q[*]})"
  echo "ratio drvisor/qemu: $(echo "scale=4; $dm / $qm" | bc)"
fi
