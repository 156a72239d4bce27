#!/bin/bash
# gdb against QEMU and against drvisor, on the same guest, in one run: the embedded test guest's
# `exec` scenario, an `hbreak` on one function with `commands; silent; continue`, N calls.
# Prints hits, seconds and hits/s for QEMU + gdb, drvisor + gdb, and drvisor --break alone, and
# the ratios. It extends bench/qemu-gdb-side-by-side.sh with the drvisor + gdb row.
#
#   cargo build --release && bench/gdb-side-by-side.sh [N]
#
# Needs qemu-system-x86_64, gdb and bc. Default N=3000.
set -u
cd "$(dirname "$0")/.."
N=${1:-3000}
SYM=${SYM:-drv_target_0}
DRV=${DRV:-target/release/drvisor}
PORT=${PORT:-1235}
CMDLINE="scenario=exec count=$N"
[ -x "$DRV" ] || { echo "build first: cargo build --release"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ELF=$(ls -t target/release/build/drvisor-*/out/guest/release/drvisor-guest 2>/dev/null | head -1)
[ -f "$ELF" ] || { echo "no guest ELF under target/release/build (cargo build --release)"; exit 2; }

script() { # $1: the `target remote` argument
  cat <<G
set pagination off
set confirm off
target remote $1
hbreak $SYM
commands
silent
set \$hits = \$hits + 1
continue
end
set \$hits = 0
continue
printf "HITS %d\n", \$hits
G
}

now() { date +%s.%N; }

# QEMU + gdb
script ":$PORT" > "$work/q.gdb"
qemu-system-x86_64 -enable-kvm -m 64 -kernel "$ELF" -append "$CMDLINE" -nographic -no-reboot \
  -device isa-debug-exit,iobase=0xf4,iosize=1 -display none -serial file:"$work/q-serial.txt" \
  -monitor none -nodefaults -S -gdb tcp::$PORT 2>/dev/null &
qp=$!
sleep 0.5
s=$(now)
timeout 600 gdb -q -batch -nx -x "$work/q.gdb" "$ELF" > "$work/q-gdb.txt" 2>&1
e=$(now)
wait $qp 2>/dev/null
qh=$(grep -o 'HITS [0-9]*' "$work/q-gdb.txt" | grep -o '[0-9]*' || echo 0)
qs=$(echo "$e - $s" | bc)

# drvisor + gdb
script "$work/gdb.sock" > "$work/d.gdb"
"$DRV" run --cmdline "count=$N" --scenario exec --gdb "unix:$work/gdb.sock" --gdb-wait \
  --events "$work/dg.jsonl" > "$work/dg-serial.txt" 2>&1 &
dp=$!
for _ in $(seq 100); do [ -S "$work/gdb.sock" ] && break; sleep 0.05; done
s=$(now)
timeout 600 gdb -q -batch -nx -x "$work/d.gdb" "$ELF" > "$work/d-gdb.txt" 2>&1
e=$(now)
wait $dp 2>/dev/null
gh=$(grep -o 'HITS [0-9]*' "$work/d-gdb.txt" | grep -o '[0-9]*' || echo 0)
gs=$(echo "$e - $s" | bc)

# drvisor --break, no debugger
s=$(now)
"$DRV" run --scenario exec --cmdline "count=$N" --break "$SYM" --events "$work/d.jsonl" > /dev/null 2>&1
e=$(now)
dh=$(grep -c '"event":"hit"' "$work/d.jsonl" || echo 0)
ds=$(echo "$e - $s" | bc)

rate() { echo "$1 / $2" | bc; }
echo "qemu+gdb:    hits=$qh seconds=$qs hits_per_s=$(rate "$qh" "$qs")"
echo "drvisor+gdb: hits=$gh seconds=$gs hits_per_s=$(rate "$gh" "$gs")"
echo "drvisor:     hits=$dh seconds=$ds hits_per_s=$(rate "$dh" "$ds")"
if [ "$qh" -gt 0 ]; then
  echo "ratio drvisor+gdb / qemu+gdb (hits/s): $(echo "scale=2; ($gh / $gs) / ($qh / $qs)" | bc)"
  echo "ratio drvisor --break / qemu+gdb (hits/s): $(echo "scale=2; ($dh / $ds) / ($qh / $qs)" | bc)"
fi
