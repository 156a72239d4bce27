#!/bin/sh
# Static checks of a built drvisor-guest ELF (default: target/release/drvisor-guest):
#  - no instruction the CI machines' emulating KVM rejects at CPL0 (SSE/AVX/x87/MMX, VEX,
#    popcnt, cmpxchg16b, xsave/xrstor, int n) and exactly one int3 (the emu-fail scenario's);
#  - the Xen PVH PHYS32_ENTRY note is present (in a PT_NOTE) and points at pvh_entry;
#  - drv_target_0..3 and drv_watch_u8..u64 exist at distinct addresses, the watch variables on
#    one page of their own.
# Needs binutils (objdump, readelf, nm). Exit status 0 = all checks passed.
set -eu
elf=${1:-"$(dirname "$0")/target/release/drvisor-guest"}
fail=0
err() { echo "check-image: FAIL: $*"; fail=1; }

sym() { nm "$elf" | awk -v s="$1" '$3 == s { print $1 }'; }
entry=$(sym pvh_entry); entry64=$(sym drv_entry64)
[ -n "$entry" ] && [ -n "$entry64" ] || { echo "check-image: FAIL: pvh_entry/drv_entry64 missing"; exit 1; }

# 32-bit boot code disassembled as i386, everything after it as x86-64.
dis=$(mktemp); trap 'rm -f "$dis"' EXIT
objdump -d -M intel,i386 --start-address=0x$entry --stop-address=0x$entry64 "$elf" >"$dis"
objdump -d -M intel --start-address=0x$entry64 "$elf" >>"$dis"
# Field 3 of an objdump line is the instruction text: "mnemonic operands".
insns=$(awk -F'\t' '/^ +[0-9a-f]+:/ && NF >= 3 { print $1 "\t" $3 }' "$dis")
bad=$(printf '%s\n' "$insns" | awk -F'\t' '{
    split($2, w, " "); m = w[1]
    if (m ~ /^(rep|repz|repnz|lock|data16|addr32|notrack|bnd)$/) m = w[2]
    if ($2 ~ /[xyz]mm[0-9]|(^|[^a-z])mm[0-7]/ ||
        m ~ /^(f[a-z0-9]*|popcnt|cmpxchg16b|xsave[a-z0-9]*|xrstor[a-z0-9]*|int|int1|icebp|v[a-z0-9]+|andn|bextr|bls[a-z]+|bzhi|sarx|shlx|shrx|rorx|mulx|pdep|pext|lzcnt|tzcnt|\(bad\))$/)
        print
}')
[ -z "$bad" ] || err "forbidden instructions:
$bad"
n_int3=$(printf '%s\n' "$insns" | awk -F'\t' '$2 ~ /^int3 *$/' | wc -l)
[ "$n_int3" = 1 ] || err "expected exactly 1 int3 (emu-fail), found $n_int3"

# PVH note: type 0x12 from owner Xen, descriptor = pvh_entry (little endian).
readelf -lW "$elf" | grep -q '^\s*NOTE ' || err "no PT_NOTE program header"
note=$(readelf -nW "$elf" | awk '/^ *Xen / && /0x00000012/ { getline; print }')
want=$(printf '%08x' 0x$entry | sed -E 's/(..)(..)(..)(..)/\4 \3 \2 \1/')
echo "$note" | grep -q "$want" || err "Xen PHYS32_ENTRY note missing or not pointing at pvh_entry ($note)"

addrs=""
for s in drv_target_0 drv_target_1 drv_target_2 drv_target_3 drv_watch_u8 drv_watch_u16 drv_watch_u32 drv_watch_u64; do
    a=$(sym $s); [ -n "$a" ] || { err "symbol $s missing"; continue; }
    echo "check-image: $s = 0x$a"
    addrs="$addrs $a"
done
dups=$(echo $addrs | tr ' ' '\n' | sort | uniq -d)
[ -z "$dups" ] || err "symbols share an address: $dups"
ws=$(sym __drv_watch_start); we=$(sym __drv_watch_end)
for s in drv_watch_u8 drv_watch_u16 drv_watch_u32 drv_watch_u64; do
    a=$(sym $s)
    [ $((0x$a / 4096)) = $((0x$ws / 4096)) ] || err "$s not on the watch page"
done
[ $((0x$ws % 4096)) = 0 ] && [ $((0x$we - 0x$ws)) = 4096 ] || err "watch page is not one aligned page"
# Nothing else may live on the watch page.
others=$(nm "$elf" | awk -v lo=$((0x$ws)) -v hi=$((0x$we)) '
    { a = 0; h = $1; for (i = 1; i <= length(h); i++) a = a * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1 }
    a >= lo && a < hi && $3 !~ /^(drv_watch_u(8|16|32|64)|__drv_watch_(start|end))$/ { print $3 }')
[ -z "$others" ] || err "other symbols on the watch page: $others"

[ $fail = 0 ] && echo "check-image: OK ($elf)"
exit $fail
