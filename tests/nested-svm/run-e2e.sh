#!/usr/bin/env bash
# The end-to-end suite on a real SVM KVM: builds the e2e test binary here (no rebuild inside),
# boots the nested L1 guest (boot-l1.sh), and runs `drvisor probe` and the whole suite there.
#
#   tests/nested-svm/run-e2e.sh [OUTDIR] [-- EXTRA E2E ARGS]
#
# Results land in OUTDIR (default target/nested-svm): probe.txt (the probe table inside L1),
# e2e.txt (the suite's output), l1-console.txt. Per-test status is printed here at the end.
# Exit status: the suite's (0 when every test passed or was ignored with its reason), 90 if L1
# could not be set up.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/nested-svm}
shift || true
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
out=$(realpath "$out")

# The e2e binary and the drvisor binary it runs, built on this host (test profile).
e2e=$(cargo test -p drvisor --test e2e --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\/e2e-[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$e2e" ] || { echo "run-e2e: could not build the e2e test binary" >&2; exit 90; }
drvisor=$(dirname "$(dirname "$e2e")")/drvisor
[ -x "$drvisor" ] || cargo build -p drvisor --bin drvisor

# One vCPU thread at a time: L1 has two CPUs and TCG makes each slow, and the SMP tests bring
# their own parallelism.
extra=$(printf '%q ' "$@")
status=0
tests/nested-svm/boot-l1.sh "$out" \
  "$drvisor probe > $out/probe.txt 2>&1; $e2e --test-threads 1 $extra > $out/e2e.txt 2>&1" \
  || status=$?

echo "== drvisor probe inside the nested SVM guest"
cat "$out/probe.txt" 2>/dev/null || echo "(no probe output)"
echo "== end-to-end tests inside the nested SVM guest"
if [ -f "$out/e2e.txt" ]; then
  grep -E '^test .* \.\.\. |^skipping ' "$out/e2e.txt" || true
  sed -n '/^failures:$/,$p' "$out/e2e.txt"
  grep -E '^test result:' "$out/e2e.txt" || true
else
  echo "(the suite did not run; see $out/l1-console.txt)"
fi
exit "$status"
