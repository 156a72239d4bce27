#!/usr/bin/env bash
# QEMU's TCG and an execution breakpoint (DR0/DR7) in code whose CS base is not 0, without KVM:
# the defect that keeps the host breakpoints at the S3 waking vector (real mode, CS 0x300 or
# 0x100) off the nested SVM host, where this QEMU is L0 and carries L1's and L2's breakpoints.
#
#   tests/nested-svm/tcg-segment-breakpoint.sh [OUTDIR]
#
# A boot sector (real mode) points its #DB vector at a handler, sets DR0 = linear 0x7d00 with
# DR7.L0 (execute), and far-jumps there: as 0000:7d00 (flat: EIP is the linear address) and as
# 07d0:0000 (CS base 0x7d00, EIP 0). The CPU raises #DB at both; the handler writes `D` to port
# 0xe9 and exits through isa-debug-exit with status 33, the code at 0x7d00 writes `N` (65).
# TCG stops at the breakpoint's linear address in both, but its #DB check (breakpoint_handler in
# target/i386/tcg/*/bpt_helper.c) looks for a breakpoint at EIP: in the second case it finds
# none and hands the stop to the gdb stub as if gdb had set it, which with no gdb attached
# segfaults (gdb_set_stop_cpu): QEMU 7.2 and 10.0 end with SIGSEGV, status 139.
# Exit status: 0 when this QEMU shows the defect (flat: #DB; CS base 0x7d00: no #DB), 1 when it
# does not (segmented code gets its #DB too), 2 when the flat case fails (the setup is wrong).
set -euo pipefail
out=${1:-target/tcg-segment-breakpoint}
mkdir -p "$out"
cat > "$out/bs.S" <<'ASM'
    .code16
    .globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7000, %sp
    movw $db_handler, 4
    movw $0, 6
    movl $0x7d00, %eax
    movl %eax, %dr0
    movl $0x401, %eax
    movl %eax, %dr7
    ljmp $TARGET_CS, $TARGET_IP
db_handler:
    movb $'D', %al
    outb %al, $0xe9
    movb $0x10, %al
    outb %al, $0xf4
1:  hlt
    jmp 1b
    .org 0x100
    movb $'N', %al
    outb %al, $0xe9
    movb $0x20, %al
    outb %al, $0xf4
2:  hlt
    jmp 2b
    .org 510
    .word 0xaa55
ASM
qemu-system-x86_64 --version | head -n 1
run() { # NAME CS IP: prints the status and what port 0xe9 got
  local name=$1
  gcc -c -DTARGET_CS="$2" -DTARGET_IP="$3" -o "$out/$name.o" "$out/bs.S"
  ld -m elf_x86_64 -Ttext 0x7c00 --oformat binary -e _start -o "$out/$name.img" "$out/$name.o"
  rm -f "$out/$name.port"
  local status=0
  timeout 30 qemu-system-x86_64 -accel tcg -cpu max -nodefaults -display none -monitor none \
    -serial none -drive "format=raw,file=$out/$name.img,if=floppy" \
    -debugcon "file:$out/$name.port" -device isa-debug-exit,iobase=0xf4,iosize=1 \
    > "$out/$name.log" 2>&1 || status=$?
  echo "$status $(cat "$out/$name.port" 2>/dev/null)"
}
flat=$(run flat 0x0000 0x7d00)
segmented=$(run segmented 0x07d0 0x0000)
echo "flat 0000:7d00: status ${flat% *}, port 0xe9 got '${flat#* }' (D: #DB)"
echo "segmented 07d0:0000: status ${segmented% *}, port 0xe9 got '${segmented#* }' (D: #DB)"
[ "$flat" = "33 D" ] || { echo "tcg-segment-breakpoint: the flat breakpoint did not fire" >&2; exit 2; }
if [ "$segmented" = "33 D" ]; then
  echo "tcg-segment-breakpoint: this QEMU raises #DB at a linear address with a CS base: no defect"
  exit 1
fi
echo "tcg-segment-breakpoint: DEFECT: no #DB where CS's base is not 0"
