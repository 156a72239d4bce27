#!/bin/bash
# A conditional breakpoint under gdb, two ways, on the same guest in one run: the embedded test
# guest's `args` scenario calls drv_target_arg(i, ...) for i = 1..N, and the condition
# `rdi % 100 == 0` holds at 1% of the calls.
#   gdb:     hbreak drv_target_arg if $rdi % 100 == 0   (gdb evaluates it: every call stops the
#            VM, gdb reads the registers over the wire, decides, resumes)
#   drvisor: monitor break drv_target_arg if rdi % 100 == 0   (drvisor evaluates it in the VMM;
#            gdb hears only of the 1%)
# and drvisor --break --if with no debugger; and, where qemu-system-x86_64 is installed, gdb's
# own break-if against QEMU's gdbstub on the same guest (QEMU has no condition of its own).
# Prints stops, seconds and calls/s, and the ratios.
#
#   cargo build --release && bench/gdb-conditions.sh [N]
#
# Needs gdb and bc (and QEMU for its row). Default N=3000 (a multiple of 100).
set -u
cd "$(dirname "$0")/.."
N=${1:-3000}
DRV=${DRV:-target/release/drvisor}
[ -x "$DRV" ] || { echo "build first: cargo build --release"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ELF="$work/guest.elf"
"$DRV" guest-image --write "$ELF" || exit 2
STOPS=$((N / 100))

now() { date +%s.%N; }

run_gdb() { # $1: the script's breakpoint lines; $2: the gdb script's tail
  rm -f "$work/gdb.sock"
  "$DRV" run --scenario args --cmdline "count=$N" --gdb "unix:$work/gdb.sock" --gdb-wait \
    --events "$work/ev.jsonl" > "$work/serial.txt" 2>&1 &
  dp=$!
  for _ in $(seq 200); do [ -S "$work/gdb.sock" ] && break; sleep 0.05; done
  printf 'set pagination off\nset confirm off\ntarget remote %s\n%s\n' "$work/gdb.sock" "$1" > "$work/s.gdb"
  s=$(now)
  timeout 900 gdb -q -batch -nx -x "$work/s.gdb" "$ELF" > "$work/gdb.txt" 2>&1
  e=$(now)
  wait $dp 2>/dev/null
  echo "$e - $s" | bc
}

# gdb evaluates the condition: `commands` counts the stops where it held.
gdb_side="hbreak drv_target_arg if \$rdi % 100 == 0
commands
silent
set \$stops = \$stops + 1
continue
end
set \$stops = 0
continue
printf \"STOPS %d\\n\", \$stops"
gs=$(run_gdb "$gdb_side")
gn=$(grep -o 'STOPS [0-9]*' "$work/gdb.txt" | grep -o '[0-9]*' || echo 0)

# drvisor evaluates it: gdb stops (SIGTRAP) only where it held; one `continue` per stop.
conts=$(for _ in $(seq $((STOPS + 1))); do echo continue; done)
vmm_side="monitor break drv_target_arg if rdi % 100 == 0
$conts"
ms=$(run_gdb "$vmm_side")
mn=$(grep -c 'received signal SIGTRAP' "$work/gdb.txt" || echo 0)

# No debugger.
s=$(now)
"$DRV" run --scenario args --cmdline "count=$N" --break drv_target_arg --if 'rdi % 100 == 0' \
  --events "$work/d.jsonl" > /dev/null 2>&1
e=$(now)
dn=$(grep -c '"event":"hit"' "$work/d.jsonl" || echo 0)
ds=$(echo "$e - $s" | bc)

# gdb evaluates it against QEMU's gdbstub (the same gdb script as the first row).
qs=""
if command -v qemu-system-x86_64 >/dev/null; then
  PORT=${PORT:-1236}
  qemu-system-x86_64 -enable-kvm -m 64 -kernel "$ELF" -append "scenario=args count=$N" \
    -nographic -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=1 -display none \
    -serial file:"$work/q-serial.txt" -monitor none -nodefaults -S -gdb tcp::$PORT 2>/dev/null &
  qp=$!
  sleep 0.5
  printf 'set pagination off\nset confirm off\ntarget remote :%s\n%s\n' "$PORT" "$gdb_side" > "$work/q.gdb"
  s=$(now)
  timeout 900 gdb -q -batch -nx -x "$work/q.gdb" "$ELF" > "$work/q-gdb.txt" 2>&1
  e=$(now)
  kill $qp 2>/dev/null; wait $qp 2>/dev/null
  qs=$(echo "$e - $s" | bc)
  qn=$(grep -o 'STOPS [0-9]*' "$work/q-gdb.txt" | grep -o '[0-9]*' || echo 0)
fi

rate() { echo "$N / $1" | bc; }
echo "gdb evaluates (break if):        stops=$gn seconds=$gs calls_per_s=$(rate "$gs")"
echo "drvisor evaluates (monitor break): stops=$mn seconds=$ms calls_per_s=$(rate "$ms")"
echo "drvisor --if, no debugger:       hits=$dn seconds=$ds calls_per_s=$(rate "$ds")"
[ -n "$qs" ] && echo "qemu, gdb evaluates (break if):  stops=$qn seconds=$qs calls_per_s=$(rate "$qs")"
echo "gdb's time / monitor break's: $(echo "scale=1; $gs / $ms" | bc)"
[ -n "$qs" ] && echo "qemu+gdb's time / monitor break's: $(echo "scale=1; $qs / $ms" | bc)"
exit 0
