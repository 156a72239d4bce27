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
rm -f "$out/flaky.txt" "$out/failed-again.txt" "$out/e2e-retry.txt"
# A test that fails is run once more on its own. One that then passes is reported FLAKY by
# name, here and in flaky.txt: TCG makes the nested guest's timing erratic, and a known
# intermittent SVM failure is tracked in the issue notes. One that fails again fails the run.
cat > "$out/.suite.sh" <<SUITE
#!/bin/bash
$drvisor probe > $out/probe.txt 2>&1
$e2e --test-threads 1 $extra > $out/e2e.txt 2>&1 && exit 0
# The names under the closing "failures:" list: a test's own output may split its result line.
for t in \$(sed -n '/^failures:\$/,/^test result:/s/^    \([^ ]*::[^ ]*\)\$/\1/p' $out/e2e.txt); do
  if $e2e --exact "\$t" --test-threads 1 >> $out/e2e-retry.txt 2>&1; then
    echo "\$t" >> $out/flaky.txt
  else
    echo "\$t" >> $out/failed-again.txt
  fi
done
[ ! -s $out/failed-again.txt ] && [ -s $out/flaky.txt ]
SUITE
chmod +x "$out/.suite.sh"
status=0
tests/nested-svm/boot-l1.sh "$out" "$out/.suite.sh" || status=$?

echo "== drvisor probe inside the nested SVM guest"
cat "$out/probe.txt" 2>/dev/null || echo "(no probe output)"
echo "== end-to-end tests inside the nested SVM guest"
if [ -f "$out/e2e.txt" ]; then
  grep -E '^test .* \.\.\. |^skipping ' "$out/e2e.txt" || true
  sed -n '/^failures:$/,$p' "$out/e2e.txt"
  grep -E '^test result:' "$out/e2e.txt" || true
  if [ -s "$out/flaky.txt" ]; then
    echo "== FLAKY on nested SVM (failed, then passed when run again on its own):"
    sed 's/^/  /' "$out/flaky.txt"
  fi
  if [ -s "$out/failed-again.txt" ]; then
    echo "== FAILED again when run on its own:"
    sed 's/^/  /' "$out/failed-again.txt"
  fi
else
  echo "(the suite did not run; see $out/l1-console.txt)"
fi
exit "$status"
