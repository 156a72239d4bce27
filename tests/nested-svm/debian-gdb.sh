#!/usr/bin/env bash
# Stock gdb against a stock Debian kernel under drvisor on a real SVM KVM (inside the nested L1
# guest of boot-l1.sh): the session a kernel developer would have.
#
#   tests/nested-svm/debian-gdb.sh [OUTDIR]
#
# The kernel is Debian's cloud kernel in ci/linux/cache/ (ci/linux/fetch.sh), whose real
# System.map gives gdb the two addresses it needs without a vmlinux: __x64_sys_getppid and the
# per-CPU current_task. /init (static busybox) runs a static program that calls getppid() 150
# times, then ends the run as debian-kernel.sh's does. drvisor starts with `--gdb-wait`, and gdb
# (batch mode, the script in OUTDIR/session.gdb):
#   hbreak *__x64_sys_getppid, continue to it, p $pc, p $gs_base, x/gx $gs_base+current_task
#   (the running task), p $cr3, info registers; then 100 continues with a `silent` breakpoint
#   command that counts them, p $n, delete, and continue to the guest's end.
# Checked from gdb's log (OUTDIR/gdb.txt) and the console: the stop is at the hbreak's address
# with RF clear; gs_base is a kernel address and the word there a direct-map task pointer; CR3
# is a page-table base; $n is 101; the program ran to its end; drvisor ended as /init asked.
# Exit status: 0 pass, 1 fail, 90 if L1 could not be set up or died, 0 with a SKIP line when
# ci/linux/cache has no kernel (fetch.sh could not download it).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/nested-svm-gdb}
mkdir -p "$out"
out=$(realpath "$out")
cache=ci/linux/cache
if [ ! -f "$cache/vmlinuz" ] || [ ! -f "$cache/System.map" ]; then
  echo "debian-gdb: SKIP: no $cache/vmlinuz and System.map (ci/linux/fetch.sh downloads them)"
  exit 0
fi
kernel=$(realpath "$cache/vmlinuz")
sym() { awk -v s="$1" '$3 == s { print "0x" $1; exit }' "$cache/System.map"; }
getppid=$(sym __x64_sys_getppid)
current_task=$(sym current_task)
[ -n "$getppid" ] && [ -n "$current_task" ] ||
  { echo "debian-gdb: FAIL: $cache/System.map lacks __x64_sys_getppid or current_task" >&2; exit 1; }
calls=150
marker="drvisor-l2: /bin/getppid-loop called getppid $calls times"

. tests/nested-svm/initramfs.sh
drvisor=$(release_drvisor)
root="$out/initramfs"
rm -rf "$root"
mkdir -p "$root/bin"
getppid_loop "$root/bin/getppid-loop"
exit_port "$root/bin/exit-port"
cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
/bin/getppid-loop $calls
$init_end
EOF
initramfs "$root" "$out/initramfs.cpio.gz" || exit 90

cat > "$out/session.gdb" <<EOF
set pagination off
set confirm off
target remote /tmp/drvisor-gdb.sock
hbreak *$getppid
continue
echo drvisor-gdb: first stop\n
printf "drvisor-gdb: pc=%#lx\n", \$pc
printf "drvisor-gdb: eflags=%#lx\n", \$eflags
printf "drvisor-gdb: gs_base=%#lx\n", \$gs_base
printf "drvisor-gdb: current=%#lx\n", *(unsigned long *)(\$gs_base + $current_task)
x/gx \$gs_base + $current_task
printf "drvisor-gdb: cr3=%#lx\n", \$cr3
p \$cr3
info registers
set \$n = 1
commands 1
silent
set \$n = \$n + 1
if \$n < 101
continue
end
end
continue
printf "drvisor-gdb: n=%d\n", \$n
delete
continue
echo drvisor-gdb: the end\n
EOF

# `quiet`: see debian-comm.sh.
cmdline='console=ttyS0 nokaslr quiet reboot=t'
sock=/tmp/drvisor-gdb.sock
rm -f "$out/console.txt" "$out/gdb.txt"
start=$(date +%s)
status=0
NESTED_TIMEOUT=${NESTED_TIMEOUT:-900} tests/nested-svm/boot-l1.sh "$out" \
  "$drvisor run --kernel $kernel --initrd $out/initramfs.cpio.gz --mem 512 \
--cmdline '$cmdline' --gdb unix:$sock --gdb-wait > $out/console.txt 2>&1 & d=\$!; \
for i in \$(seq 300); do [ -S $sock ] && break; sleep 0.1; done; \
timeout 300 gdb -q -batch -nx -x $out/session.gdb > $out/gdb.txt 2>&1; \
echo \"gdb exited \$?\" >> $out/gdb.txt; \
timeout 120 tail --pid=\$d -f /dev/null || kill -TERM \$d; wait \$d" || status=$?
echo "debian-gdb: drvisor exited $status after $(( $(date +%s) - start )) s (L1's boot included)"
[ "$status" -eq 90 ] && exit 90
cat "$out/gdb.txt" 2>/dev/null | grep -v '^\(rax\|rbx\|rcx\|rdx\|rsi\|rdi\|rbp\|rsp\|r[0-9]*\) ' || true

fail=0
check() { # NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "debian-gdb: ok: $name"; else echo "debian-gdb: FAIL: $name" >&2; fail=1; fi
}
value() { sed -n "s/^drvisor-gdb: $1=\(0x[0-9a-f]*\|[0-9]*\)$/\1/p" "$out/gdb.txt" | head -n 1; }
pc=$(value pc); eflags=$(value eflags); gs=$(value gs_base); cur=$(value current); cr3=$(value cr3); n=$(value n)
in_range() { [ -n "$1" ] && [ $(( $1 >= $2 && $1 < $3 )) -eq 1 ]; }
# The kernel's half of a 4- or 5-level address space (0xffff8880... or, with LA57, 0xff11...):
# its top byte is 0xff. (bash's arithmetic is signed, so the bits are compared, not the values.)
kernel_half() { [ -n "$1" ] && [ $(( ($1 >> 56) & 0xff )) -eq $(( 0xff )) ]; }
check "the first stop is at the hbreak ($getppid)" test "$pc" = "$getppid"
check "eflags at the stop has RF clear ($eflags)" test -n "$eflags" -a $(( ${eflags:-0x10000} & 0x10000 )) -eq 0
check "gs_base is a kernel address ($gs)" kernel_half "$gs"
check "the word at gs_base+current_task is a kernel (task) pointer ($cur)" kernel_half "$cur"
check "x/gx printed it" grep -q "^0x[0-9a-f]*:[[:space:]]*${cur:-none}\$" "$out/gdb.txt"
check "cr3 is a page-table base ($cr3)" in_range "$(( (${cr3:-0} & ~0xfff) ))" 0x1000 0x20000000
check "info registers shows rip, cs, fs_base, gs_base, cr3" \
  sh -c "grep -q '^rip ' '$out/gdb.txt' && grep -q '^cs ' '$out/gdb.txt' && grep -q '^fs_base ' '$out/gdb.txt' && grep -q '^gs_base ' '$out/gdb.txt' && grep -q '^cr3 ' '$out/gdb.txt'"
check "100 silent continues, each to the next hit (n=$n)" test "$n" = 101
check "the guest program ran to its end" grep -q "^$marker" "$out/console.txt"
check "drvisor ended as /init asked (status $status)" test "$status" -eq 0
[ "$fail" -eq 0 ] || { tail -n 30 "$out/console.txt" >&2; exit 1; }
echo "debian-gdb: PASS"
