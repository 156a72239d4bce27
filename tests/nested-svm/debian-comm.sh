#!/usr/bin/env bash
# Kernel-aware hits on a stock Debian kernel under drvisor on a real SVM KVM (inside the nested
# L1 guest of boot-l1.sh), with no System.map: the symbols come from the bzImage's own kallsyms
# and the task layout from its BTF.
#
#   tests/nested-svm/debian-comm.sh [OUTDIR]
#
# /init runs two copies of one static program that call getppid(): `getppid-loop` 150 times
# and `other-loop` 70 times (busybox's shell calls it too). Inside one L1 boot:
# 1. `drvisor ci` runs a spec (OUTDIR/comm.toml) whose check breaks on __x64_sys_getppid with
#    `if = 'comm == "getppid-loop"'`, `hits = 150` and `stack_contains = "do_syscall_64"`: the
#    exact count of one process among several making the same syscall, each hit's captured stack
#    naming the syscall's caller; its HTML report (--html) parses;
# 2. `drvisor run` with the same breakpoint and condition, and `--capture 256`, writes its
#    events: every hit event has `comm` = getppid-loop and one `pid`, its stack's first word
#    named as the return into do_syscall_64, and there are exactly 150; `drvisor trace` turns
#    them into a trace.json that parses, with the 150 hits as instants.
# Exit status: 0 pass, 1 fail, 90 if L1 could not be set up or died, 0 with a SKIP line when
# ci/linux/cache has no kernel (ci/linux/fetch.sh could not download it).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/nested-svm-comm}
mkdir -p "$out"
out=$(realpath "$out")
cache=ci/linux/cache
if [ ! -f "$cache/vmlinuz" ]; then
  echo "debian-comm: SKIP: no $cache/vmlinuz (ci/linux/fetch.sh downloads it)"
  exit 0
fi
kernel=$(realpath "$cache/vmlinuz")
calls=150
others=70

. tests/nested-svm/initramfs.sh
drvisor=$(release_drvisor)
root="$out/initramfs"
rm -rf "$root"
mkdir -p "$root/bin"
getppid_loop "$root/bin/getppid-loop"
cp "$root/bin/getppid-loop" "$root/bin/other-loop"
exit_port "$root/bin/exit-port"
cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
/bin/other-loop $others
/bin/getppid-loop $calls
/bin/other-loop $others
$init_end
EOF
initramfs "$root" "$out/initramfs.cpio.gz" || exit 90

# `quiet`: the checks need the program's lines, not the kernel's boot log, and every console
# character costs serial-port exits, right after which this host's known nested-paging defect
# strikes (docs/testing.md, "On a real SVM KVM").
cmdline='console=ttyS0 nokaslr quiet reboot=t'
cat > "$out/comm.toml" <<EOF
# One process among several making the same syscall, by its comm, on the kernel's own symbols.
[vm]
kernel = "$kernel"
initrd = "$out/initramfs.cpio.gz"
cmdline = "$cmdline"
mem = 512
timeout = 300

[[check]]
name = "getppid by getppid-loop only"
break = "__x64_sys_getppid"
if = 'comm == "getppid-loop"'
hits = $calls
stack_contains = "do_syscall_64"

[[check]]
name = "the program ran"
console_match = 'getppid-loop called getppid $calls times'
EOF

rm -f "$out/events.jsonl" "$out/trace.json" "$out/ci.txt" "$out/run.txt" "$out/l1-shutdowns.txt"
# L1's own record of every guest shutdown (triple fault) exit, with the guest RIP its VMCB held
# (KVM resets it before drvisor can read it), and where L1's __svm_vcpu_run is: as in
# suite.py, so that a guest triple fault here can be told apart from QEMU's TCG handing the
# guest L1's own VMRUN return address (known-host-defects.txt).
l1_trace="{ uname -r; grep -w __svm_vcpu_run /proc/kallsyms; } > $out/l1-facts.txt 2>/dev/null; \
T=/sys/kernel/tracing; mount -t tracefs nodev \$T 2>/dev/null; \
{ echo 'exit_reason == 127' > \$T/events/kvm/kvm_exit/filter && \
echo 1 > \$T/events/kvm/kvm_exit/enable && echo 1 > \$T/tracing_on; } 2>/dev/null; "
status=0
NESTED_TIMEOUT=${NESTED_TIMEOUT:-900} tests/nested-svm/boot-l1.sh "$out" \
  "$l1_trace$drvisor ci $out/comm.toml --json $out/report.json --html $out/report.html > $out/ci.txt 2>&1; echo \"ci exited \$?\" >> $out/ci.txt; \
timeout 300 $drvisor run --kernel $kernel --initrd $out/initramfs.cpio.gz --mem 512 \
--cmdline '$cmdline' --break __x64_sys_getppid --if 'comm == \"getppid-loop\"' --capture 256 \
--events $out/events.jsonl > $out/run.txt 2>&1; echo \"run exited \$?\" >> $out/run.txt; \
$drvisor trace $out/events.jsonl -o $out/trace.json >> $out/run.txt 2>&1; \
cat /sys/kernel/tracing/trace > $out/l1-shutdowns.txt 2>/dev/null" || status=$?
[ "$status" -eq 90 ] && exit 90
cat "$out/ci.txt" 2>/dev/null | tail -n 6 || true
grep -v '^\[' "$out/run.txt" 2>/dev/null | grep -v '"event"' | tail -n 8 || true

fail=0
check() { # NAME COMMAND...
  local name=$1; shift
  if "$@"; then echo "debian-comm: ok: $name"; else echo "debian-comm: FAIL: $name" >&2; fail=1; fi
}
check "drvisor ci passed the spec (exact count by comm)" grep -q '^ci exited 0$' "$out/ci.txt"
html_ok() { tests/html-nesting.py "$out/report.html" && grep -q 'getppid by getppid-loop only' "$out/report.html"; }
check "its HTML report nests its elements and names the check" html_ok
check "the symbols came from the kernel's kallsyms" grep -q "symbols from the kernel's own kallsyms" "$out/run.txt"
check "drvisor run ended as /init asked (status 0)" grep -q '^run exited 0$' "$out/run.txt"
check "the events: $calls hits, each from getppid-loop, one pid, the caller named" python3 - "$out/events.jsonl" "$calls" <<'PY'
import json, sys
hits = [e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "hit"]
comms = {e.get("comm") for e in hits}
pids = {e.get("pid") for e in hits}
# At the syscall's first instruction RSP holds the return into do_syscall_64 (6.1 calls the
# syscall table from there).
callers = {(e.get("symbolized") or [{}])[0].get("symbol", "").split("+")[0] for e in hits}
print(f"  {len(hits)} hits, comm {comms}, pid {pids}, first stack word in {callers}")
ok = len(hits) == int(sys.argv[2]) and comms == {"getppid-loop"} and len(pids) == 1 and None not in pids
sys.exit(0 if ok and callers == {"? do_syscall_64"} else 1)
PY
check "trace.json parses, with the hits as instants" python3 - "$out/trace.json" "$calls" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
hits = [e for e in doc["traceEvents"] if e.get("cat") == "hit"]
print(f"  {len(hits)} hit instants; args of the first: {hits[0]['args'] if hits else None}")
sys.exit(0 if len(hits) == int(sys.argv[2]) and all(h["args"].get("comm") == "getppid-loop" for h in hits) else 1)
PY
if [ "$fail" -ne 0 ]; then
  tail -n 30 "$out/ci.txt" "$out/run.txt" >&2 || true
  # Each guest shutdown L1 saw (the two runs' last one is /init's reboot), and L1's
  # __svm_vcpu_run: a shutdown RIP just past its VMRUN is QEMU's TCG defect, not the guest's.
  echo "debian-comm: L1's guest shutdown exits, and its kvm_amd:" >&2
  grep -h "reason shutdown" "$out/l1-shutdowns.txt" >&2 || echo "  (none recorded)" >&2
  cat "$out/l1-facts.txt" >&2 || true
  exit 1
fi
echo "debian-comm: PASS"
