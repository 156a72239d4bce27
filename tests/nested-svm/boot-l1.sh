#!/usr/bin/env bash
# Boots a real SVM KVM and runs one command inside it.
#
# Our machines' /dev/kvm is paravirtual (kvm_pvm). QEMU's TCG emulator implements AMD SVM with
# nested paging, so a stock Debian kernel booted under `qemu-system-x86_64 -accel tcg -cpu max`
# (the "L1" guest) loads kvm_amd, and the /dev/kvm inside it is Linux's genuine SVM code. The
# host's filesystem is L1's root over 9p, read-only (virtme-ng), so nothing is copied.
#
#   tests/nested-svm/boot-l1.sh OUTDIR 'COMMAND'
#
# KVM_AMD_PARAMS, when set, reloads L1's kvm_amd with those parameters (default: as loaded, with
# nested=1). OUTDIR is shared read-write with L1; COMMAND runs there as root, in the current directory, and
# should leave its results in OUTDIR. Exit status: COMMAND's, or 90 if L1 could not be set up.
# Installs what it needs on a fresh Debian 12 machine: QEMU >= 9.1 from bookworm-backports
# (Debian 12's own 7.2 never fires debug-register breakpoints in the nested guest: its VMRUN
# loads DR7 without arming TCG's breakpoints), the standard kernel (it has kvm_amd and the 9p
# modules) and virtme-ng from PyPI.
set -euo pipefail
out=$(realpath "${1:?usage: boot-l1.sh OUTDIR COMMAND}")
cmd=${2:?usage: boot-l1.sh OUTDIR COMMAND}
mkdir -p "$out"
rm -f "$out/.status" "$out/.l1-error"
export DEBIAN_FRONTEND=noninteractive

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 9 ] || { [ "${1:-0}" -eq 9 ] && [ "${2:-0}" -ge 1 ]; }
}

if ! qemu_ok || ! ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1; then
  "$(dirname "$0")/../../ci/debian-backports.sh"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  apt-get install -y -qq --no-install-recommends linux-image-amd64 busybox-static >/dev/null
fi
qemu_ok || { echo "boot-l1: QEMU >= 9.1 is needed; $(qemu-system-x86_64 --version | head -1)" >&2; exit 90; }
command -v vng >/dev/null || pip install -q virtme-ng
hash -r
kernel=$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)

cat > "$out/.inside.sh" <<INNER
#!/bin/bash
${KVM_AMD_PARAMS:+modprobe -r kvm_amd}
if ! modprobe kvm_amd ${KVM_AMD_PARAMS:-nested=1}; then echo "kvm_amd did not load" > "$out/.l1-error"; exit 90; fi
cd "$PWD"
( $cmd )
echo \$? > "$out/.status"
INNER
chmod +x "$out/.inside.sh"

# -cpu max on TCG is AuthenticAMD with svm, npt and vgif. Two vCPUs, since the e2e suite has
# SMP tests. --verbose puts L1's kernel log in l1-console.txt: without it, an L1 that dies
# leaves that file empty.
timeout "${NESTED_TIMEOUT:-2400}" vng --run "$kernel" --disable-kvm --cpus 2 --memory 2G \
  --force-9p --rwdir "$out" --qemu-opts="-cpu max" --verbose --exec "$out/.inside.sh" \
  > "$out/l1-console.txt" 2>&1 || true
if [ -f "$out/.l1-error" ]; then
  cat "$out/.l1-error" >&2; exit 90
fi
if [ ! -f "$out/.status" ]; then
  echo "boot-l1: the command did not finish inside L1; see $out/l1-console.txt" >&2
  tail -n 20 "$out/l1-console.txt" >&2
  exit 90
fi
exit "$(cat "$out/.status")"
