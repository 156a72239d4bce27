#!/usr/bin/env bash
# The end-to-end suite on a real SVM KVM: builds the e2e test binary here (no rebuild inside),
# boots the nested L1 guest (boot-l1.sh), and runs `drvisor probe` and the whole suite there.
#
#   tests/nested-svm/run-e2e.sh [OUTDIR] [-- FILTER]
#
# FILTER selects tests by substring, as `cargo test FILTER` does. Results land in OUTDIR (default
# target/nested-svm): probe.txt (the probe table inside L1), results.N.txt (boot N's libtest
# results), e2e.N.txt (what its tests printed), l1-console.N.txt, retry.*.txt, flaky.txt and
# failed-again.txt. Per-test status is printed here at the end. Exit status: 0 when every test
# passed, was ignored with its reason, or passed when run again and is a known host defect
# (known-host-defects.txt; never in a promise suite, see suite.py); 1 otherwise; 90 if L1 could
# not be set up.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/nested-svm}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
out=$(realpath "$out")

# The e2e binary and the drvisor binary it runs, built on this host. Optimized: inside L1 every
# instruction of drvisor itself is emulated by TCG too, and an unoptimized build made the suite
# about twice as slow. NESTED_PROFILE=debug builds the test profile instead.
profile=()
[ "${NESTED_PROFILE:-release}" = release ] && profile=(--release)
e2e=$(cargo test "${profile[@]}" -p drvisor --test e2e --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\/e2e-[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$e2e" ] || { echo "run-e2e: could not build the e2e test binary" >&2; exit 90; }
drvisor=$(dirname "$(dirname "$e2e")")/drvisor
[ -x "$drvisor" ] || cargo build "${profile[@]}" -p drvisor --bin drvisor --features test-hooks

# The suite runs in L1 with one test at a time (L1 has two CPUs and TCG makes each slow; the SMP
# tests bring their own parallelism), across as many L1 boots as it takes: see suite.py.
# The promise suites run in boots of their own, with L1's kvm_amd on shadow paging (npt=0):
# see PROMISE_PARAMS in suite.py. NESTED_PROMISE_PARAMS= (empty) runs every test alike.
export NESTED_PROMISE_PARAMS=${NESTED_PROMISE_PARAMS-nested=1 npt=0}
exec python3 tests/nested-svm/suite.py "$out" "$e2e" "$drvisor" "$@"
