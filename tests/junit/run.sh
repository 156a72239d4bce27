#!/usr/bin/env bash
# drvisor ci's JUnit XML read back by a real consumer: junitparser from PyPI. Runs the example
# suites (passing, failing on purpose, and kvm-unit-tests when its images are here) and checks
# that junitparser's counts and names agree with the JSON report of the same run.
#
#   tests/junit/run.sh [DRVISOR_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
drvisor=${1:-target/debug/drvisor}
[ -x "$drvisor" ] || cargo build -p drvisor --bin drvisor
venv=${JUNIT_VENV:-target/junit-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import junitparser' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "junitparser==5.0.3"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
run() {  # NAME EXPECTED_EXIT SPEC...
  local name=$1 want=$2; shift 2
  local code=0
  "$drvisor" ci "$@" --jobs 2 --junit "$work/$name.xml" --json "$work/$name.json" > "$work/$name.log" || code=$?
  if [ "$code" != "$want" ]; then
    cat "$work/$name.log"; echo "junit: $name exited $code, wanted $want" >&2; status=1; return
  fi
  echo "== $name (exit $code)"
  "$venv/bin/python" tests/junit/check.py "$work/$name.xml" "$work/$name.json" || status=1
}
run examples 0 ci/examples/*.toml
run failing 1 ci/examples/failing/*.toml
if [ -f ../shared/testdata/kvm-unit-tests/setjmp.flat ]; then
  run kvm-unit-tests 0 ci/kvm-unit-tests/*.toml
fi
exit $status
