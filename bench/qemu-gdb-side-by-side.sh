#!/bin/bash
# Side by side, in one run: the same PVH guest ELF, a host breakpoint on one function hit N times,
# under QEMU -enable-kvm + gdb (hbreak with a silent continue) and under drvisor --break.
# Prints hits, guest-reported calls, seconds and hits/s for each, and the ratio.
# Usage (from the project root, after `cargo build --release`):
#   bench/qemu-gdb-side-by-side.sh [N] [ELF] [SYMBOL] [CMDLINE]
# Defaults: N=3000, the embedded test guest's ELF, drv_target_0, "scenario=exec count=N".
# Needs: qemu-system-x86 and gdb (apt-get install qemu-system-x86 gdb).
set -u
N=${1:-3000}
ELF=${2:-$(ls -t target/release/build/drvisor-*/out/guest/release/drvisor-guest 2>/dev/null | head -1)}
SYM=${3:-drv_target_0}
CMDLINE=${4:-"scenario=exec count=$N"}
DRV=${DRV:-target/release/drvisor}
PORT=${PORT:-1235}
[ -f "$ELF" ] || { echo "no guest ELF (build first, or pass one)"; exit 2; }
work=$(mktemp -d)
cat > "$work/q.gdb" <<G
set pagination off
set confirm off
set architecture i386:x86-64
target remote :$PORT
hbreak $SYM
commands
silent
set \$hits = \$hits + 1
continue
end
set \$hits = 0
continue
G
qemu-system-x86_64 -enable-kvm -m 64 -kernel "$ELF" -append "$CMDLINE" -nographic -no-reboot \
  -device isa-debug-exit,iobase=0xf4,iosize=1 -display none -serial file:"$work/q-serial.txt" \
  -monitor none -nodefaults -S -gdb tcp::$PORT 2>/dev/null &
qp=$!
sleep 0.5
s=$(date +%s.%N)
timeout 600 gdb -q -batch -x "$work/q.gdb" -ex 'printf "HITS %d\n", $hits' "$ELF" > "$work/q-gdb.txt" 2>&1
e=$(date +%s.%N)
wait $qp 2>/dev/null
qh=$(grep -o 'HITS [0-9]*' "$work/q-gdb.txt" | grep -o '[0-9]*' || echo 0)
qs=$(echo "$e - $s" | bc)
s=$(date +%s.%N)
"$DRV" run --kernel "$ELF" --cmdline "$CMDLINE" --break "$SYM" --events "$work/d.jsonl" > "$work/d-serial.txt" 2>&1
e=$(date +%s.%N)
dh=$(grep -c '"event":"hit"' "$work/d.jsonl" || echo 0)
ds=$(echo "$e - $s" | bc)
echo "qemu+gdb: hits=$qh seconds=$qs hits_per_s=$(echo "$qh / $qs" | bc)"
echo "drvisor:  hits=$dh seconds=$ds hits_per_s=$(echo "$dh / $ds" | bc)"
[ "$qh" -gt 0 ] && echo "ratio (drvisor hits/s / qemu+gdb hits/s): $(echo "scale=1; ($dh / $ds) / ($qh / $qs)" | bc)"
rm -rf "$work"
