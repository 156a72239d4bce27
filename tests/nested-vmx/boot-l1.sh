#!/usr/bin/env bash
# Boots a real Intel VMX KVM and runs one command inside it.
#
# Our machines' /dev/kvm is paravirtual (kvm_pvm) and QEMU's TCG has no VMX, but Bochs 2.8 does:
# a stock Debian kernel (L1) boots under Bochs with the Haswell CPU model (VMX with EPT, VPID,
# unrestricted guest) and loads kvm_intel, whose /dev/kvm is Linux's genuine VMX code.
#
#   tests/nested-vmx/boot-l1.sh OUTDIR 'COMMAND'
#
# The same contract as tests/nested-svm/boot-l1.sh: COMMAND runs in L1 as root, in the current
# directory, and leaves its results in OUTDIR; the exit status is COMMAND's, or 90 if L1 could
# not be set up or died before COMMAND ended. COMMAND may be the path of a script (it is copied in).
#
# Bochs has no shared folder, so L1's root is an initramfs built here: static busybox, kvm's
# modules, and every path in VMX_FILES (space-separated) at the same absolute path, or at DEST
# for an entry SRC=DEST; executables get the shared libraries `ldd` names. Every file COMMAND
# writes in OUTDIR comes back over L1's serial console as it grows (stream.c: `VMX-C NAME|DATA`
# lines, half-written lines included) and is rebuilt in the host's OUTDIR by console.py (hidden
# files are not sent), so what was written survives a death of L1. The raw console is
# OUTDIR/l1-console.txt, Bochs' own log OUTDIR/bochs.log.
#
# Environment: NESTED_TIMEOUT (wall seconds for the boot, default 2400), VMX_HANG (wall
# seconds of console silence after which L1 counts as hung and is stopped, default 120), VMX_MEM
# (L1's MiB, default 2048), VMX_IPS (Bochs instructions per L1 second, default 200000000: L1's
# clock then runs at about wall speed when Bochs is busy, so time limits inside mean what they
# say), KERNEL (L1's kernel, default the newest /boot/vmlinuz-*-amd64), VMX_BOCHS (another Bochs
# binary, e.g. one configured with --enable-smp) and VMX_CPUS (L1's CPUs, default 1; more need
# such a build). Installs what it needs on a fresh Debian 12 machine (the kernel, busybox-static,
# cpio, GRUB and xorriso for the boot ISO, g++ for Bochs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:?usage: boot-l1.sh OUTDIR COMMAND}")
cmd=${2:?usage: boot-l1.sh OUTDIR COMMAND}
mkdir -p "$out"
build=$out/.l1
rm -rf "$build" "$out/l1-console.txt"
mkdir -p "$build"

need=()
ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
[ -d /usr/lib/grub/i386-pc ] || need+=(grub-pc-bin)
command -v grub-mkrescue >/dev/null || need+=(grub-common)
command -v xorriso >/dev/null || need+=(xorriso)
command -v mformat >/dev/null || need+=(mtools)
command -v g++ >/dev/null && command -v make >/dev/null || need+=(g++ make)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${VMX_BOCHS:-}" ]; then
  "$here/build-bochs.sh" || { echo "boot-l1: could not build Bochs" >&2; exit 90; }
fi
bochs=$(realpath "${VMX_BOCHS:-$here/../../target/nested-vmx/bochs-2.8/bochs/bochs}")
kernel=${KERNEL:-$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)}
moddir=/lib/modules/${kernel#/boot/vmlinuz-}/kernel

# --- L1's initramfs ---------------------------------------------------------------------------
root=$build/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,root,lib/modules} "$root$out" "$root$PWD"
cp /bin/busybox "$root/bin/"
gcc -static -O2 -o "$root/bin/vmx-stream" "$here/stream.c"
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-intel; do
  f=$moddir/$m.ko
  if [ -f "$f" ]; then cp "$f" "$root/lib/modules/"
  elif [ -f "$f.xz" ]; then xz -dc "$f.xz" > "$root/lib/modules/$(basename "$m").ko"
  else echo "boot-l1: $f missing" >&2; exit 90; fi
done
put() {  # a host path (SRC or SRC=DEST) into the initramfs, with the libraries it links
  local p=${1%%=*} to=${1#*=} lib
  mkdir -p "$root$(dirname "$to")"
  if [ -d "$p" ]; then mkdir -p "$root$to" && cp -a "$p/." "$root$to/"; return; fi
  cp -L "$p" "$root$to"
  for lib in $(ldd "$p" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}'); do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
  done
}
for p in ${VMX_FILES:-}; do put "$p"; done
# L1 has busybox's sh, no bash: a script is run by sh.
if [ -f "$cmd" ]; then cmd=$(realpath "$cmd"); put "$cmd"; cmd="sh $cmd"; fi
cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
ip link set lo up
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root RUST_BACKTRACE=1
echo "VMX-L1: init reached, uptime \$(cut -d' ' -f1 /proc/uptime)s"
for m in irqbypass kvm kvm-intel; do insmod /lib/modules/\$m.ko || echo "VMX-L1: insmod \$m failed"; done
echo "VMX-L1: \$(ls -l /dev/kvm 2>&1)"
for p in ept vpid unrestricted_guest nested enable_apicv; do echo "VMX-L1: kvm_intel.\$p=\$(cat /sys/module/kvm_intel/parameters/\$p 2>&1)"; done
if [ ! -c /dev/kvm ]; then echo "VMX-L1-STATUS 90 (no /dev/kvm)"; rc=90
else
  vmx-stream "$out" /tmp/stream-stop &   # OUTDIR's files, out over the console as they grow
  streamer=\$!
  cd "$PWD"
  ( $cmd )
  rc=\$?
  touch /tmp/stream-stop
  wait \$streamer
  echo "VMX-L1-STATUS \$rc"
fi
dmesg | grep -iE 'kvm|vmx|bug|oops|panic|warn' | tail -n 20 | sed 's/^/VMX-L1: dmesg: /'
echo "VMX-L1-DONE"
# Bochs quits when "Shutdown" is written to its port 0x8900.
for c in S h u t d o w n; do printf '%s' "\$c" | dd of=/dev/port bs=1 seek=\$((0x8900)) count=1 2>/dev/null; done
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$build/initrd.img"

# --- boot ISO: BIOS GRUB (Bochs cannot load a bzImage itself) --------------------------------
mkdir -p "$build/iso/boot/grub"
cp "$kernel" "$build/iso/boot/vmlinuz"
mv "$build/initrd.img" "$build/iso/boot/initrd.img"
# loglevel=3: only critical kernel messages (oopses, panics) reach the console, so they do not
# split the lines coming back.
cat > "$build/iso/boot/grub/grub.cfg" <<EOF
set timeout=0
serial --unit=0 --speed=115200
terminal_output serial
menuentry "vmx-l1" {
  linux /boot/vmlinuz console=ttyS0,115200 nokaslr mitigations=off loglevel=3
  initrd /boot/initrd.img
}
EOF
grub-mkrescue -o "$build/boot.iso" "$build/iso" > "$build/grub-mkrescue.log" 2>&1 || {
  cat "$build/grub-mkrescue.log" >&2; exit 90; }
rm -rf "$build/iso" "$root"

# --- Bochs ------------------------------------------------------------------------------------
mem=${VMX_MEM:-2048}
cat > "$build/bochsrc" <<EOF
display_library: nogui
romimage: file=$(dirname "$bochs")/bios/BIOS-bochs-latest
vgaromimage: file=$(dirname "$bochs")/bios/VGABIOS-lgpl-latest
cpu: model=corei7_haswell_4770, count=${VMX_CPUS:-1}, ips=${VMX_IPS:-200000000}, reset_on_triple_fault=0, ignore_bad_msrs=1
memory: guest=$mem, host=$mem
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path="$build/boot.iso", status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev="$build/serial.txt"
clock: sync=none, time0=local
log: $out/bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
mouse: enabled=0
EOF
: > "$build/serial.txt"
"$bochs" -q -f "$build/bochsrc" </dev/null > "$build/bochs.stdout" 2>&1 &
status=0
python3 "$here/console.py" "$build/serial.txt" "$out" $! "${NESTED_TIMEOUT:-2400}" || status=$?
wait 2>/dev/null || true
[ "$status" -eq 90 ] && grep -av "^VMX-C" "$out/l1-console.txt" | tail -n 20 >&2
exit "$status"
