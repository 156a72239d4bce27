#!/usr/bin/env bash
# The end-to-end suite on a real Intel VMX KVM: kvm_intel in a Debian L1 under Bochs 2.8
# (boot-l1.sh). Builds the e2e test binary and drvisor here, and runs `drvisor probe` and the
# suite in L1 with tests/nested-svm/suite.py (one test at a time, per-test results that survive a
# death of L1, a rerun of what failed, one wall-clock budget).
#
#   tests/nested-vmx/run-e2e.sh [OUTDIR] [-- FILTER]
#
# FILTER selects tests by substring, as `cargo test FILTER` does. Results in OUTDIR (default
# target/nested-vmx/e2e): probe.txt, results.N.txt, e2e.N.txt, l1-console.N.txt, retry.*.txt,
# flaky.txt, failed-again.txt, as for nested SVM. Not run, and listed as skipped with the
# reason: the tests that run more than one vCPU (smp-tests.txt; Bochs emulates one CPU) and those
# whose guest never exits by itself (no-exit-tests.txt; under Bochs such an L2 stops L1). A test that fails and
# then passes on its own fails the run in the suites guest_and_host, host_bp, page, events,
# emulation and live_changes; elsewhere it does unless known-host-defects.txt lists it with the
# host defect behind it. NESTED_TIMEOUT: the wall budget in seconds (default 1500).
# Exit status: 0 when every test passed or was skipped with its reason, 1 when one failed, 90
# when L1 could not be set up.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$PWD/tests/nested-vmx
out=${1:-target/nested-vmx/e2e}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
out=$(realpath "$out")

e2e=$(cargo test --release -p drvisor --test e2e --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\/e2e-[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$e2e" ] || { echo "run-e2e: could not build the e2e test binary" >&2; exit 90; }
# The test build above also built (and put in place) the drvisor the tests run, with the
# `test-hooks` feature they need; a plain `cargo build` here would replace it with one without.
drvisor=$(dirname "$(dirname "$e2e")")/drvisor
[ -x "$drvisor" ] || { echo "run-e2e: the e2e build made no $drvisor" >&2; exit 90; }

# The tools tests run, into L1: gdb (gdb-minimal: Debian's gdb needs Python's library), curl,
# setpriv, and the C compiler with exactly the files a compile of tests/e2e/kvm-probe.c opens here.
need=()
command -v curl >/dev/null || need+=(curl)
command -v setpriv >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v strace >/dev/null || need+=(strace)
ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
tools=$PWD/target/nested-vmx/tools
mkdir -p "$tools"
gdb_deb() { (cd "$tools" && apt-get download gdb-minimal >/dev/null 2>&1 && dpkg-deb -x gdb-minimal_*.deb . && rm gdb-minimal_*.deb); }
[ -x "$tools/usr/bin/gdb" ] || gdb_deb || { apt-get update -qq && gdb_deb; } ||
  echo "run-e2e: no gdb-minimal; the gdb tests will be listed as skipped (no gdb in L1)" >&2
gdb=; [ -x "$tools/usr/bin/gdb" ] && gdb=$tools/usr/bin/gdb=/usr/bin/gdb
strace -f -qq -e trace=execve,openat -o "$tools/cc.trace" cc -O2 -o "$tools/kvm-probe" tests/e2e/kvm-probe.c
cc_files=$(grep -v ' = -1 ' "$tools/cc.trace" | sed -n 's/.*\(execve\|openat\)([^"]*"\(\/[^"]*\)".*/\2/p' \
  | grep -v -e '^/tmp' -e '^/proc' -e '^/dev' -e "^$tools" | xargs -r realpath -s -m | sort -u)
kernel=$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)

# e2e and drvisor at the paths the binary was built with (its drvisor is CARGO_BIN_EXE_drvisor),
# the repo files tests read (ci/; the kvm-unit-tests images; kvm-probe.c, found through vmm/), and
# a bzImage in /boot for the loader tests.
export VMX_FILES="$e2e $drvisor $PWD/ci $PWD/tests/data/kvm-unit-tests $PWD/vmm/Cargo.toml \
  $PWD/tests/e2e/kvm-probe.c $kernel \
  $gdb $(command -v curl) $(command -v setpriv) $cc_files"
export NESTED_BOOT_L1=$here/boot-l1.sh NESTED_NAME="nested VMX" NESTED_SKIP=$here/smp-tests.txt:$here/no-exit-tests.txt
export NESTED_KNOWN_DEFECTS=$here/known-host-defects.txt NESTED_TIMEOUT=${NESTED_TIMEOUT:-1500}
export NESTED_PROMISE_PARAMS=
exec python3 tests/nested-svm/suite.py "$out" "$e2e" "$drvisor" "$@"
