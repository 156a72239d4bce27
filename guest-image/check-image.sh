#!/bin/sh
# Static checks of a built drvisor-guest ELF (default: target/release/drvisor-guest):
#  - no instruction the CI machines' emulating KVM rejects at CPL0 (SSE/AVX/x87/MMX, VEX,
#    popcnt, cmpxchg16b, xsave/xrstor, int n) and exactly one int3 (the emu-fail scenario's);
#  - the Xen PVH PHYS32_ENTRY note is present (in a PT_NOTE) and points at pvh_entry;
#  - drv_target_0..3 and drv_watch_u8..u64 exist at distinct addresses, the watch variables on
#    one page of their own;
#  - drv_range_buf (section .drv_ranges, 17 pages) and drv_mixed_page (.drv_mixed, 1 page) each
#    fill their page-aligned section exactly, and no other symbol or section is on those pages.
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

# Page-protection watch buffers: SECTION SYMBOL SIZE. The section must be page-aligned, exactly
# SIZE bytes, hold SYMBOL (nm size SIZE) at its start and no other symbol (a preceding region's
# `__drv_*_end` marker may equal its start), and share no page with any other allocated section.
sections=$(readelf -SW "$elf" | sed -nE 's/^ *\[ *[0-9]+\] +//p' |
    awk 'NF == 10 && $7 ~ /A/ { print $1, $3, $5 }')
own_pages() {
    sec=$1; want_sym=$2; want_size=$3
    line=$(echo "$sections" | awk -v s="$sec" '$1 == s')
    [ -n "$line" ] || { err "section $sec missing"; return; }
    set -- $line; lo=$((0x$2)); hi=$((0x$2 + 0x$3))
    [ $((lo % 4096)) = 0 ] && [ $((hi - lo)) = "$want_size" ] ||
        err "$sec is not $want_size page-aligned bytes (at 0x$2, size 0x$3)"
    symline=$(nm -S "$elf" | awk -v s="$want_sym" '$4 == s')
    [ -n "$symline" ] || { err "symbol $want_sym missing"; return; }
    set -- $symline
    [ $((0x$1)) = $lo ] && [ $((0x$2)) = "$want_size" ] ||
        err "$want_sym (0x$1, size 0x$2) does not fill $sec"
    echo "check-image: $want_sym = 0x$1 size $want_size ($sec)"
    others=$(nm "$elf" | awk -v lo=$lo -v hi=$hi -v s="$want_sym" '
        { a = 0; h = $1; for (i = 1; i <= length(h); i++) a = a * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1 }
        a >= lo && a < hi && $3 != s && $3 !~ /^__drv_[a-z_]+_end$/ { print $3 }')  # end markers point past their own region
    [ -z "$others" ] || err "other symbols in $sec: $others"
    # Other sections on the same pages (lo and hi are page-aligned when the check above passed).
    shared=$(echo "$sections" | while read -r n a z; do
        [ "$n" = "$sec" ] && continue
        b=$((0x$a / 4096 * 4096)); e=$(( (0x$a + 0x$z + 4095) / 4096 * 4096 ))
        if [ $((0x$z)) -gt 0 ] && [ $b -lt $hi ] && [ $e -gt $lo ]; then echo "$n"; fi
    done)
    [ -z "$shared" ] || err "sections sharing pages with $sec: $shared"
}
own_pages .drv_ranges drv_range_buf 69632
own_pages .drv_mixed drv_mixed_page 4096

[ $fail = 0 ] && echo "check-image: OK ($elf)"
exit $fail
