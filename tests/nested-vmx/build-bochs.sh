#!/usr/bin/env bash
# Builds Bochs 2.8 from source for run-vmx.sh (BOCHS_BIN=DEST/bochs/bochs).
#
#   tests/nested-vmx/build-bochs.sh [DEST]     (default target/nested-vmx/bochs-2.8 in the repo)
#
# Does nothing when DEST/bochs/bochs is already there (delete DEST to rebuild). BOCHS_SMP=1 adds
# --enable-smp (several CPUs, interleaved in Bochs' one thread; boot-l1.sh's VMX_BOCHS and
# VMX_CPUS use it), e.g. BOCHS_SMP=1 build-bochs.sh target/nested-vmx/bochs-2.8-smp.
# Why not Debian 12's bochs 2.7: its VMX saves the single-step "pending debug exception" into the
# VMCS on every VM exit (fixed upstream in 60cc8020e, 2023-11-13, "Fixed
# VMCS_GUEST_PENDING_DBG_EXCEPTIONS saved on VMEXIT"), so a guest with RFLAGS.TF gets a spurious
# #DB before its instruction after any exit, and drvisor's single-step rows fail. 2.8 has the
# fix; this build is also headless (nogui) and has no internal debugger, so it needs no pty and no
# debugger command file, and it runs several times faster than Debian's binary.
#
# Source: bochs-2.8-src.tar.xz beside this script (3.7 MB, kept in the repo: CI has no network
# but the Debian, PyPI and crates registries), the bochs/ folder of the REL_2_8_FINAL tag of
# github.com/bochs-emu/Bochs (LGPL-2.1; `git archive --prefix=bochs-2.8/ REL_2_8_FINAL:bochs`),
# or another copy named by BOCHS_TARBALL. Needs g++ and make.
# ~5 minutes on 2 cores.
#
# --disable-show-ips: 2.8's show-ips handler logs from a SIGALRM handler and can deadlock on the
# log mutex (seen here: Bochs asleep in futex_wait, L1 frozen during insmod kvm).
# --enable-x86-debugger is what makes the emulated DR0-DR3 breakpoints fire at all (without it,
# hardware breakpoints and watchpoints are silently never hit); --enable-vmx=2 gives EPT,
# VPID and unrestricted guest; --enable-avx/--enable-evex are needed by the Haswell and later
# CPU models.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=$(realpath -m "${1:-$here/../../target/nested-vmx/bochs-2.8}")
tarball=${BOCHS_TARBALL:-$here/bochs-2.8-src.tar.xz}
[ -x "$dest/bochs/bochs" ] && exit 0
mkdir -p "$dest"
if [ ! -f "$dest/bochs/configure" ]; then
  tar -xJf "$tarball" -C "$dest" && rm -rf "$dest/bochs" && mv "$dest/bochs-2.8" "$dest/bochs"
fi
command -v g++ >/dev/null && command -v make >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ make >/dev/null; }
cd "$dest/bochs"
[ -f Makefile ] && make distclean >/dev/null 2>&1 || true
./configure --with-nogui --without-x11 --without-x --disable-plugins --disable-debugger \
  --disable-docbook --enable-x86-64 --enable-cpu-level=6 --enable-vmx=2 --enable-avx \
  --enable-evex --enable-pci --enable-x86-debugger --enable-all-optimizations \
  --enable-monitor-mwait --disable-show-ips ${BOCHS_SMP:+--enable-smp} > "$dest/configure.log" 2>&1
make -j"$(nproc)" > "$dest/make.log" 2>&1 || { tail -n 30 "$dest/make.log" >&2; exit 1; }
ls -l "$dest/bochs/bochs"
