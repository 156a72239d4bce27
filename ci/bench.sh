#!/usr/bin/env bash
# The CI harness's two figures for BENCHMARKS.md, on the example suite (ci/examples/*.toml):
#   1. specs per minute at --jobs 1 and --jobs 2 (wall clock of `drvisor ci`, ROUNDS rounds);
#   2. the harness's own overhead per spec as a ratio to the guest's run time:
#      - harness = the wall time of `drvisor ci` not spent in its `drvisor run` children
#        (spec parsing, the host probe, spawning, judging, reports), per spec;
#      - VM creation = the child time of the `status` spec, whose guest exits at once;
#      - guest run time = each child's time minus that VM creation time.
#
#   ci/bench.sh [DRVISOR_BINARY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
drvisor=${1:-target/release/drvisor}
rounds=${2:-5}
[ -x "$drvisor" ] || cargo build --release -p drvisor --bin drvisor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for jobs in 1 2; do
  for r in $(seq "$rounds"); do
    "$drvisor" ci ci/examples/*.toml --jobs "$jobs" --json "$work/j$jobs-$r.json" > /dev/null
  done
done
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def load(jobs):
    return [json.load(open(f"{work}/j{jobs}-{r}.json")) for r in range(1, rounds + 1)]
for jobs in (1, 2):
    reps = load(jobs)
    specs = sum(r["totals"]["specs"] for r in reps)
    wall = sum(r["seconds"] for r in reps)
    print(f"--jobs {jobs}: {specs / wall * 60:.0f} specs per minute ({specs} specs in {wall:.2f} s)")
reps = load(1)
specs = [s for r in reps for s in r["specs"]]
child = sum(s["run_seconds"] for s in specs)
harness = (sum(r["seconds"] for r in reps) - child) / len(specs)
create = statistics.median(s["run_seconds"] for s in specs if s["name"] == "status")
guest = sum(max(s["run_seconds"] - create, 0.0) for s in specs) / len(specs)
print(f"per spec at --jobs 1: harness {harness * 1000:.1f} ms, VM creation and teardown "
      f"{create * 1000:.1f} ms, guest run {guest * 1000:.1f} ms")
print(f"overhead ratio (harness + VM creation) / guest run time: {(harness + create) / guest:.2f}")
PY
