#!/usr/bin/env python3
"""Runs the end-to-end suite inside the nested SVM guest, across as many L1 boots as it takes.

    suite.py OUTDIR E2E_BINARY DRVISOR_BINARY [FILTER]

L1 is a Linux guest under QEMU's TCG emulator, and TCG makes it mortal: in one CI run the
guest (or the emulator under it) died 25 minutes into the suite, and every result after that
point was lost with it. So no result here depends on one boot surviving:

- Each boot runs, in one libtest process, every selected test that has no result yet (with
  NESTED_PROMISE_PARAMS set, the promise suites wait for boots of their own, whose kvm_amd is
  reloaded with those parameters; see PROMISE_PARAMS). The
  results go to a log file of their own (`--logfile`), written as they happen, so a boot that
  dies leaves every finished result and the name of the test it died in.
- A test that L1 died in runs again in the next boot. If L1 dies in it a second time, it fails
  with that reason, and the boots go on without it.
- Then every test that failed runs once more, each in a process of its own, in one more boot. One
  that fails again fails the run. One that passes then is FLAKY, and a flake is a bug:
  - in the suites that are drvisor's promise (PROMISE_SUITES: exactly once, nothing lost) it
    fails the run;
  - elsewhere it is allowed only when KNOWN_HOST_DEFECTS lists the test with a reason that names
    a defect of the host outside drvisor; any other flake fails the run.
  - one failure is L0's by proof, and allowed anywhere: a guest triple fault right after an exit
    at which KVM gave, as the guest's RIP, L1's own return address from VMRUN in kvm_amd (checked
    exactly against that boot's /proc/kallsyms; see l0_rip_defects).

All boots share one wall-clock budget, NESTED_TIMEOUT seconds (default 3600), so the whole CI run
stays within its limit; no boot starts with less than MIN_BOOT seconds left, and tests the
budget left unrun fail as such. Each test's wall time is measured from here (durations.txt).
Exit status: 0 when every test passed, was ignored with its reason, or is a flake allowed above;
1 otherwise; 90 when L1 could not be set up at all.

The nested VMX suite (tests/nested-vmx/run-e2e.sh) runs this same loop with its own L1:
NESTED_BOOT_L1 names the boot script (the same contract as boot-l1.sh here), NESTED_NAME the
platform in the report, NESTED_SKIP files of test names not to run (colon-separated; each test
reported as skipped, with its file's reason), and NESTED_KNOWN_DEFECTS its list of known host
defects.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOT_L1 = Path(os.environ.get("NESTED_BOOT_L1", HERE / "boot-l1.sh"))
NAME = os.environ.get("NESTED_NAME", "nested SVM")
MAX_BOOTS = 5
MIN_BOOT = 180
L1_DEATHS_PER_TEST = 2
# The suites whose tests are drvisor's promise: a test there that fails once fails the run.
PROMISE_SUITES = ("guest_and_host::", "host_bp::", "page::", "events::", "emulation::",
                  "live_changes::")
# L1's kvm_amd parameters for the promise suites' boots (NESTED_PROMISE_PARAMS; empty: one kind
# of boot for every test). run-e2e.sh asks for `npt=0`: with nested paging, QEMU's TCG emulation
# of it (L0) now and then makes a VMRUN deliver a #PF that cannot be delivered, a triple fault
# no guest or VMM state explains (docs/testing.md). The other tests keep nested paging, as
# users' hosts have it; under shadow paging in TCG a Linux boot takes many minutes.
PROMISE_PARAMS = os.environ.get("NESTED_PROMISE_PARAMS", "")
# `TEST  REASON` lines: the only flakes allowed, each with the host defect behind it.
# The nested VMX suite names its own list (NESTED_KNOWN_DEFECTS).
KNOWN_HOST_DEFECTS = Path(os.environ.get("NESTED_KNOWN_DEFECTS", HERE / "known-host-defects.txt"))
# The result of one test in a libtest log: `test NAME ... ok`. A test that is running when L1
# dies has its `test NAME ... ` written and nothing after it.
RESULT = re.compile(r"^test (\S+) +\.\.\. ?(ok|FAILED|ignored)?")


def listed(path):
    """The test names in a `--list --format terse` output, in order."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [line[: -len(": test")] for line in lines if line.endswith(": test")]


def read_results(log):
    """(finished: {name: status}, the name of a test that started and never finished or None)."""
    finished, running = {}, None
    if not log.exists():
        return finished, running
    for line in log.read_text(errors="replace").splitlines():
        m = RESULT.match(line)
        if m:
            name, status = m.groups()
            if status:
                finished[name], running = status, None
            else:
                running = name
    return finished, running


def known_host_defects():
    """{test: reason} from KNOWN_HOST_DEFECTS; blank lines and `#` comments are skipped."""
    known = {}
    if KNOWN_HOST_DEFECTS.exists():
        for line in KNOWN_HOST_DEFECTS.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.strip().partition(" ")
                known[name] = reason.strip()
    return known


def judge_flakes(flaky, known, l0_defects):
    """(allowed: [(test, reason)], refused: [(test, why)]) for the tests that failed, then
    passed. `l0_defects` ({test: reason}) are failures proven to be L0's, allowed even in a
    promise suite."""
    allowed, refused = [], []
    for t in flaky:
        if t in l0_defects:
            allowed.append((t, l0_defects[t]))
        elif t.startswith(PROMISE_SUITES):
            refused.append((t, "a promise suite: exactly once admits no flake"))
        elif t in known and known[t]:
            allowed.append((t, known[t]))
        else:
            refused.append((t, f"not listed with its host defect in {KNOWN_HOST_DEFECTS.name}"))
    return allowed, refused


# Run first in every boot: L1's kernel release, and where its kvm_amd's __svm_vcpu_run (the
# code around VMRUN) was loaded (nothing on a VMX L1). Then L1's ftrace records every guest
# shutdown (triple fault) exit with the guest RIP the VMCB held, which KVM resets before drvisor
# can read it (SVM_EXIT_SHUTDOWN is 0x7f; a VMX L1 has no such exit and records nothing).
L1_FACTS = ("{{ uname -r; grep -w __svm_vcpu_run /proc/kallsyms; }} > {out}/l1-facts.{number}.txt "
            "2>/dev/null; T=/sys/kernel/tracing; mount -t tracefs nodev $T 2>/dev/null; "
            "{{ echo 'exit_reason == 127' > $T/events/kvm/kvm_exit/filter && "
            "echo 1 > $T/events/kvm/kvm_exit/enable && echo 1 > $T/tracing_on; }} 2>/dev/null")
# Run last in every boot: the shutdown exits L1 recorded.
L1_SHUTDOWNS = "cat /sys/kernel/tracing/trace > {out}/l1-shutdowns.{number}.txt 2>/dev/null"
SHUTDOWN_AT = re.compile(r"kvm_exit: vcpu \d+ reason shutdown rip 0x([0-9a-f]+)")

# drvisor's report of a guest triple fault, with the RIP of the vCPU's exit before it.
TRIPLE_FAULT_AFTER = re.compile(r"guest triple fault on vCPU \d+; .*its previous exit was at "
                                r"rip=0x([0-9a-f]+)")


def vmrun_return_offset(release):
    """How far past __svm_vcpu_run's start the instruction after its VMRUN is, in the kvm-amd
    module of kernel `release` (L1 runs this host's kernel and modules), or None."""
    ko = next(Path(f"/lib/modules/{release}").rglob("kvm-amd.ko*"), None) if release else None
    if ko is None or ko.suffix != ".ko":
        return None
    try:
        asm = subprocess.run(["objdump", "-d", str(ko)], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if "<__svm_vcpu_run>:\n" not in asm:
        return None
    body = asm.split("<__svm_vcpu_run>:\n", 1)[1].split("\n\n", 1)[0]
    insns = [(int(m.group(1), 16), m.group(2)) for m in
             (re.match(r"\s*([0-9a-f]+):\t(.*)", l) for l in body.splitlines()) if m]
    for (at, text), (after, _) in zip(insns, insns[1:]):
        if re.search(r"\tvmrun\b", text):
            return after - insns[0][0]
    return None


def l0_rip_defects(out, flaky):
    """{test: reason} for flaky tests whose failure was a guest triple fault with the guest's RIP
    at the address in L1's own kvm_amd just past its VMRUN instruction (the host RIP that VMRUN
    saves for its #VMEXIT): either at the exit drvisor saw before the fault, or at the shutdown
    exit itself, as L1's ftrace recorded it in that boot (one recorded shutdown per test). No
    code in drvisor or in the guest can produce an L1 kernel address; L0, QEMU's TCG emulation
    of SVM, wrote L1's return address into the guest's saved state. Checked exactly, per boot:
    L1's __svm_vcpu_run from its /proc/kallsyms plus the offset in the module it loaded."""
    if not flaky:
        return {}
    returns = set()
    for facts in out.glob("l1-facts.*.txt"):
        words = facts.read_text(errors="replace").split()
        offset = vmrun_return_offset(words[0]) if words else None
        if offset is not None and len(words) > 1:
            returns.add(int(words[1], 16) + offset)
    found = {}
    # A failure's message is in its boot's libtest log (results.N.txt), after `---- TEST ----`.
    for log in sorted(out.glob("results.*.txt")):
        text = log.read_text(errors="replace")
        number = log.name.split(".")[1]
        trace = out / f"l1-shutdowns.{number}.txt"
        shutdowns = [int(m.group(1), 16) for m in
                     SHUTDOWN_AT.finditer(trace.read_text(errors="replace"))] if trace.exists() else []
        for t in flaky:
            head = f"---- {t} ----\n"
            block = text.split(head, 1)[1].split("\n---- ", 1)[0] if head in text else ""
            for m in TRIPLE_FAULT_AFTER.finditer(block):
                if int(m.group(1), 16) in returns:
                    found[t] = (f"L0 defect: KVM reported rip=0x{m.group(1)}, L1's own return "
                                "address from VMRUN in kvm_amd, as the guest's RIP; the guest ran "
                                "on from there and triple-faulted (QEMU's TCG emulation of SVM)")
            at = next((r for r in shutdowns if r in returns), None)
            if t not in found and "guest triple fault on vCPU" in block and at is not None:
                shutdowns.remove(at)
                found[t] = (f"L0 defect: L1 recorded this boot's guest shutdown at rip=0x{at:x}, "
                            "L1's own return address from VMRUN in kvm_amd, as the guest's RIP; "
                            "the guest ran from there and triple-faulted (QEMU's TCG emulation "
                            "of SVM)")
    return found


def shutdown_evidence(out):
    """Per boot, L1's kernel, where its __svm_vcpu_run is, and every guest shutdown exit its
    ftrace recorded: what a triple fault that l0_rip_defects could not explain leaves to read."""
    lines = []
    for facts in sorted(out.glob("l1-facts.*.txt")):
        number = facts.name.split(".")[1]
        words = facts.read_text(errors="replace").split()
        offset = vmrun_return_offset(words[0]) if words else None
        trace = out / f"l1-shutdowns.{number}.txt"
        records = [l.strip() for l in trace.read_text(errors="replace").splitlines()
                   if SHUTDOWN_AT.search(l)] if trace.exists() else []
        where = (f"__svm_vcpu_run at 0x{words[1]}, VMRUN returns to +0x{offset:x}"
                 if len(words) > 1 and offset is not None else "no kvm_amd facts")
        lines.append(f"  boot {number}: {' '.join(words[:1]) or '?'}; {where}; "
                     f"{len(records)} shutdown(s){'' if trace.exists() else ' (no trace file)'}\n")
        lines += [f"    {r}\n" for r in records]
    return "".join(lines)


def boot(out, number, script_lines, deadline, durations, params=""):
    """Runs the lines as a script inside a fresh L1, its kvm_amd reloaded with `params` if
    any; returns boot-l1.sh's status. While it runs, the boot's results log is watched from
    here, and each test's wall time (from its `test NAME ...` line to the next) goes into
    `durations`."""
    script = out / f".boot{number}.sh"
    script.write_text("#!/bin/bash\n" + "\n".join(script_lines) + "\n")
    script.chmod(0o755)
    env = dict(os.environ, NESTED_TIMEOUT=str(int(deadline - time.time())))
    env.pop("KVM_AMD_PARAMS", None)
    if params:
        env["KVM_AMD_PARAMS"] = params
    child = subprocess.Popen([BOOT_L1, out, script], env=env)
    log = out / f"results.{number}.txt"
    current, since = None, time.time()
    while True:
        done = child.poll() is not None
        finished, running = read_results(log)
        now = time.time()
        if current and running != current:
            if current in finished:
                durations[current] = now - since
            current = None
        if running and running != current:
            current, since = running, now
        if done:
            break
        time.sleep(1)
    console = out / "l1-console.txt"
    if console.exists():
        console.replace(out / f"l1-console.{number}.txt")
    return child.returncode


def skip_list():
    """{name not to run: why}, from the files in NESTED_SKIP (colon-separated): one test name a
    line, and the reason in the file's comment lines."""
    skip = {}
    for path in filter(None, os.environ.get("NESTED_SKIP", "").split(":")):
        lines = Path(path).read_text().splitlines()
        reason = " ".join(l.lstrip("# ").strip() for l in lines if l.startswith("#"))
        skip.update((l.strip(), reason) for l in lines if l.strip() and not l.startswith("#"))
    return skip


def main():
    out = Path(sys.argv[1]).resolve()
    e2e, drvisor = sys.argv[2], sys.argv[3]
    skip = skip_list()
    selection = sys.argv[4:5] + [arg for t in skip for arg in ("--skip", t)]
    wanted = sys.argv[4] if len(sys.argv) > 4 else ""
    deadline = time.time() + int(os.environ.get("NESTED_TIMEOUT", "3600"))
    for pattern in ("tests.txt", "selected.txt", "results.*.txt", "e2e.*.txt", "e2e-retry.txt",
                    "retry.*.txt", "l1-console*.txt", "durations.txt", "l1-facts.*.txt",
                    "l1-shutdowns.*.txt"):
        for stale in out.glob(pattern):
            stale.unlink()

    # Which trials exist depends on the probe, so the lists are made inside L1, in the first boot.
    every, selected = out / "tests.txt", out / "selected.txt"
    results, deaths, died_twice, durations = {}, {}, [], {}
    number = 0
    # A boot needs about a minute before its first test: no new one with less left.
    while number < MAX_BOOTS and time.time() < deadline - MIN_BOOT:
        if number == 0:
            lines = [f"{drvisor} probe > {out}/probe.txt 2>&1",
                     f"{e2e} --list --format terse > {every} 2>/dev/null",
                     f"{e2e} --list --format terse {' '.join(map(quote, selection))} > {selected} 2>/dev/null"]
            choice = list(map(quote, selection))
            if PROMISE_PARAMS:
                choice += [arg for suite in PROMISE_SUITES for arg in ("--skip", suite)]
            params = ""
        else:
            remaining = [t for t in listed(selected) if t not in results and t not in died_twice]
            if not remaining:
                break
            others = [t for t in remaining if not t.startswith(PROMISE_SUITES)]
            group, params = ((others, "") if others or not PROMISE_PARAMS
                             else (remaining, PROMISE_PARAMS))
            lines = []
            choice = ["--exact"] + [quote(arg) for t in listed(every) if t not in group
                                    for arg in ("--skip", t)]
            print(f"suite: boot {number + 1}: {len(group)} tests, L1's kvm_amd "
                  f"{params or 'as it loads'}")
        number += 1
        lines.insert(0, L1_FACTS.format(out=out, number=number))
        log = out / f"results.{number}.txt"
        lines.append(" ".join([e2e, "--test-threads", "1", "--logfile", str(log), *choice,
                               ">", f"{out}/e2e.{number}.txt", "2>&1"]))
        lines += [L1_SHUTDOWNS.format(out=out, number=number), "exit 0"]
        status = boot(out, number, lines, deadline, durations, params)
        finished, running = read_results(log)
        results.update(finished)
        console = f"{out}/l1-console.{number}.txt"
        if running and time.time() >= deadline - 5:
            print(f"suite: the budget ran out during {running} (boot {number})")
            break
        if running:
            # L1 died, or the test binary itself did inside a healthy L1: the same either way.
            deaths[running] = deaths.get(running, 0) + 1
            print(f"suite: the run died during {running} (boot {number}, status {status}); "
                  f"the boot's console is {console}")
            if deaths[running] >= L1_DEATHS_PER_TEST:
                died_twice.append(running)
            continue
        if status == 0:
            continue
        if number == 1 and not results:
            print(f"suite: L1 could not be set up; see {console}", file=sys.stderr)
            return 90
        print(f"suite: boot {number} ended before its first test (status {status}); see {console}")

    selected = listed(selected)
    skipped = [t for t in listed(every) if t in skip and wanted in t]
    unrun = [t for t in selected if t not in results and t not in died_twice]
    failed = [t for t in selected if results.get(t) == "FAILED"] + died_twice
    flaky, failed_again = [], list(unrun)
    if failed and time.time() < deadline - MIN_BOOT:
        number += 1
        lines = [L1_FACTS.format(out=out, number=number)]
        lines += [" ".join([e2e, "--test-threads", "1", "--exact", quote(t), "--logfile",
                            f"{out}/retry.{i}.txt", ">>", f"{out}/e2e-retry.txt", "2>&1"])
                  for i, t in enumerate(failed)]
        promises_only = all(t.startswith(PROMISE_SUITES) for t in failed)
        boot(out, number, lines + [L1_SHUTDOWNS.format(out=out, number=number), "exit 0"],
             deadline, {}, PROMISE_PARAMS if promises_only else "")
        for i, t in enumerate(failed):
            again, _ = read_results(out / f"retry.{i}.txt")
            (flaky if again.get(t) == "ok" else failed_again).append(t)
    else:
        failed_again += failed
    allowed, refused = judge_flakes(flaky, known_host_defects(), l0_rip_defects(out, flaky))
    report(out, selected, results, deaths, died_twice, unrun, flaky, failed_again)
    for title, flakes in (("FLAKY, allowed: a known host defect", allowed),
                          ("FLAKY, and that fails the run", refused)):
        if flakes:
            print(f"== {title}:")
            print("".join(f"  {t}: {why}\n" for t, why in flakes), end="")
    evidence = shutdown_evidence(out)
    if evidence and (refused or failed_again):
        print("== what L1 recorded of its guests' shutdowns (triple faults), and its VMRUN return:")
        print(evidence, end="")
    if skipped:
        print(f"== {len(skipped)} tests not run on {NAME}:")
        print("".join(f"test {t} ... skipped ({skip[t]})\n" for t in skipped), end="")
    slowest = sorted(durations.items(), key=lambda d: -d[1])
    (out / "durations.txt").write_text("".join(f"{d:8.1f} s  {t}\n" for t, d in slowest))
    print(f"== the slowest tests (all in {out}/durations.txt; {sum(durations.values()):.0f} s in all)")
    print("".join(f"{d:8.1f} s  {t}\n" for t, d in slowest[:12]), end="")
    # Last, so that a log cut to its head and tail still says why the run failed.
    failing = failed_again + [t for t, _ in refused]
    if failing:
        print(f"== why, in short (each failure's first lines; whole above and in {out}):")
        print(why_in_short(out, failing), end="")
    return 1 if failed_again or refused else 0


FAILURE_HEADER = re.compile(r"^---- (\S+) ----$", re.M)


def failure_messages(text):
    """{test: message} from the failures section of one libtest log."""
    start, end = text.find("\nfailures:\n"), text.rfind("\nfailures:\n")
    if start < 0:
        return {}
    section = text[start:end] if end > start else text[start:]
    headers = list(FAILURE_HEADER.finditer(section))
    return {h.group(1): section[h.end():(headers[i + 1].start() if i + 1 < len(headers)
                                          else len(section))].strip("\n")
            for i, h in enumerate(headers)}


def why_in_short(out, tests, lines_each=8):
    """The first lines of each test's failure messages, from every boot and retry log."""
    text = []
    for t in tests:
        found = False
        for log in sorted(out.glob("results.*.txt")) + sorted(out.glob("retry.*.txt")):
            message = failure_messages(log.read_text(errors="replace")).get(t)
            if message is None:
                continue
            found = True
            text.append(f"{t} ({log.name}):\n")
            text += [f"  {line[:160]}\n" for line in message.splitlines()[:lines_each]]
        if not found:
            text.append(f"{t}: no failure message (L1 died in it, or it never ran)\n")
    return "".join(text)


def quote(word):
    return "'" + word.replace("'", "'\\''") + "'"


def report(out, selected, results, deaths, died_twice, unrun, flaky, failed_again):
    print(f"== drvisor probe inside the {NAME} guest")
    probe = out / "probe.txt"
    print(probe.read_text(errors="replace") if probe.exists() else "(no probe output)")
    print(f"== end-to-end tests inside the {NAME} guest")
    # An ignored test printed why when the tests were listed: `skipping NAME: REASON`.
    listing = (out / "tests.txt").read_text(errors="replace") if (out / "tests.txt").exists() else ""
    why = dict(l[len("skipping "):].split(": ", 1) for l in listing.splitlines()
               if l.startswith("skipping ") and ": " in l)
    for t in selected:
        status = results.get(t) or ("L1 died in it twice" if t in died_twice else "not run")
        if status == "ignored" and t in why:
            status += f" ({why[t]})"
        died = f" (L1 died in it {deaths[t]}x)" if t in deaths and t not in died_twice else ""
        print(f"test {t} ... {status}{died}")
    for log in sorted(out.glob("results.*.txt")):
        text = log.read_text(errors="replace")
        if "\nfailures:\n" in text:
            print(f"== failures in {log.name}")
            print(text[text.index("\nfailures:\n") + 1:])
    counts = {s: sum(1 for t in selected if results.get(t) == s) for s in ("ok", "FAILED", "ignored")}
    print(f"== {len(selected)} tests: {counts['ok']} passed, {counts['FAILED']} failed, "
          f"{counts['ignored']} ignored, {len(died_twice)} killed L1 twice, {len(unrun)} not run "
          f"(boot budget spent), {sum(deaths.values())} L1 deaths")
    for title, names, file in ((f"FLAKY on {NAME} (failed, then passed when run again on its own)",
                                flaky, "flaky.txt"),
                               ("FAILED again when run on its own, or never run", failed_again,
                                "failed-again.txt")):
        (out / file).write_text("".join(f"{t}\n" for t in names))
        if names:
            print(f"== {title}:")
            print("".join(f"  {t}\n" for t in names), end="")


if __name__ == "__main__":
    sys.exit(main())
