#!/usr/bin/env bash
# Records QEMU's verdicts on every entry of unittests.cfg, with upstream's own runner, into
# qemu-10.0-results/ beside this script. It needs an upstream kvm-unit-tests checkout at the
# commit in ../README.md, configured and built (`./configure && make -j2`), and QEMU 10.0.
#
#   tests/data/kvm-unit-tests/x86/record-qemu.sh KUT_DIR
#
# `run_tests.sh -a` runs every entry, the nodefault ones too; its one-line verdicts go to
# run_tests.txt and each entry's full log to NAME.log.
set -euo pipefail
kut=$(realpath "${1:?usage: record-qemu.sh KVM_UNIT_TESTS_DIR}")
out="$(cd "$(dirname "$0")" && pwd)/qemu-10.0-results"
rm -rf "$kut/logs" && mkdir -p "$out" && rm -f "$out"/*.log "$out"/run_tests.txt
(cd "$kut" && ./run_tests.sh -v -a) | sed 's/\x1b\[[0-9;]*m//g' \
  | grep -E '^(PASS|FAIL|SKIP) ' > "$out/run_tests.txt"
cp "$kut"/logs/*.log "$out/"
echo "record-qemu: $(wc -l < "$out/run_tests.txt") verdicts in $out"
