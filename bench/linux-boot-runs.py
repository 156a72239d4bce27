#!/usr/bin/env python3
"""The timed boots of bench/linux-boot-vs-qemu.sh, run inside the nested L1 guest.

    linux-boot-runs.py OUTDIR N DRVISOR KERNEL INITRD BREAKDOWN_INITRD CMDLINE [DRVISOR_ALT]

Boots KERNEL with INITRD to the /init marker line under drvisor and under QEMU, alternating,
after one unmeasured warm-up boot of each (it fills the page cache and drvisor's probe cache),
N measured boots each. Each boot's wall time is taken from just before the process is started
to the moment its console output holds a milestone (the decompressor's first line, the kernel's
first line, `Run /init`, the marker) and to the process's exit. Then one boot of each with
BREAKDOWN_INITRD and `initcall_debug log_buf_len=4M`, whose /init prints the slow initcalls and the long gaps
of the kernel log. Every console goes to OUTDIR/<vmm>-<run>.txt; the figures are printed and
written to OUTDIR/results.json. DRVISOR_ALT, when given, is a second drvisor binary (e.g. one
with a change under test), booted in turn with the two others and compared with QEMU too.
"""

import json
import os
import re
import select
import subprocess
import sys
import time

MARKER = b"drvisor-l2: userspace reached"
# Milestones on the way; a VMM prints only some of them. drvisor's line about the kernel's
# kallsyms comes once it has read them (a bzImage's payload decompressed on the host, on a
# thread of its own while the guest boots), so it is timed but is no phase of the boot;
# SeaBIOS's banner and its `Booting from ROM` (the linuxboot
# option ROM) come from QEMU's firmware; the decompressor's first line needs `earlyprintk=serial`
# and `nokaslr` on the command line; then the kernel's first line (printed once its early
# console is up), the start of /init, and the marker.
MILESTONES = [
    ("kallsyms_read", b"symbols from the kernel's own kallsyms"),
    ("seabios", b"SeaBIOS (version"),
    ("option_rom", b"Booting from ROM"),
    ("decompressor", b"KASLR disabled"),
    ("kernel", b"Linux version"),
    ("run_init", b"Run /init as init process"),
    ("marker", MARKER),
]
UPTIME = re.compile(rb"drvisor-l2: userspace reached, [^\n]*?uptime=([0-9.]+)s")
KALLSYMS_MS = re.compile(rb"kallsyms \(decompressed from the bzImage, ([0-9]+) ms\)")
RUN_TIMEOUT_S = 400


def drvisor_cmd(drvisor, kernel, initrd, cmdline):
    return [drvisor, "run", "--kernel", kernel, "--initrd", initrd, "--mem", "512",
            "--cmdline", cmdline]


def qemu_cmd(kernel, initrd, cmdline):
    # What a user types: QEMU's default machine (i440FX) with its SeaBIOS, plus isa-debug-exit
    # at drvisor's exit port so that /init's write of 0 to 0xf4 ends QEMU too (exit status 1).
    return ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "512", "-nographic",
            "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]


def timed_boot(cmd, console_path):
    """Runs `cmd` once; returns the seconds to each milestone and to the exit, and its status."""
    seen = {}
    out = bytearray()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    fd = proc.stdout.fileno()
    deadline = start + RUN_TIMEOUT_S
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if not timed_out and (left <= 0 or not select.select([fd], [], [], left)[0]):
            proc.kill()
            timed_out = True
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        now = time.monotonic() - start
        # A milestone may straddle two reads: search the tail of what came before, too.
        tail = max(0, len(out) - 64)
        out += chunk
        for name, pattern in MILESTONES:
            if name not in seen and out.find(pattern, tail) >= 0:
                seen[name] = now
    status = proc.wait()
    seen["exit"] = time.monotonic() - start
    with open(console_path, "wb") as f:
        f.write(out)
    m = UPTIME.search(out)
    k = KALLSYMS_MS.search(out)
    return {
        "status": status,
        "timed_out": timed_out,
        "seconds": seen,
        "uptime_at_marker": float(m.group(1)) if m else None,
        "kallsyms_ms": int(k.group(1)) if k else None,
    }


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    out, n, drvisor, kernel, initrd, breakdown_initrd, cmdline = sys.argv[1:8]
    alt = sys.argv[8] if len(sys.argv) > 8 and sys.argv[8] else None
    n = int(n)
    vmms = {
        # name: (command for an initrd, the exit status /init's write to port 0xf4 gives)
        "drvisor": (lambda i, c: drvisor_cmd(drvisor, kernel, i, c), 0),
        "qemu": (lambda i, c: qemu_cmd(kernel, i, c), 1),
    }
    if alt:
        vmms["drvisor-alt"] = (lambda i, c: drvisor_cmd(alt, kernel, i, c), 0)
    results = {"n": n, "cmdline": cmdline, "kernel": kernel, "drvisor_alt": alt,
               "runs": {vmm: [] for vmm in vmms}, "loadavg_l1": [loadavg()]}

    def boot(vmm, label, initrd_path, cmd_line):
        make, want = vmms[vmm]
        r = timed_boot(make(initrd_path, cmd_line), os.path.join(out, f"{vmm}-{label}.txt"))
        r["ok"] = "marker" in r["seconds"] and r["status"] == want and not r["timed_out"]
        s = r["seconds"]
        print(f"{vmm:8} {label:9} marker {s.get('marker', float('nan')):7.2f} s, exit "
              f"{s['exit']:7.2f} s, status {r['status']}, guest uptime at marker "
              f"{r['uptime_at_marker']} s{'' if r['ok'] else '  (FAILED: see the console file)'}",
              flush=True)
        return r

    for vmm in vmms:
        results[f"warmup_{vmm}"] = boot(vmm, "warmup", initrd, cmdline)
    for i in range(1, n + 1):
        for vmm in vmms:
            results["runs"][vmm].append(boot(vmm, str(i), initrd, cmdline))
        results["loadavg_l1"].append(loadavg())
    for vmm in ("drvisor", "qemu"):
        results[f"breakdown_{vmm}"] = boot(vmm, "breakdown", breakdown_initrd,
                                           cmdline + " initcall_debug log_buf_len=4M")
    results["loadavg_l1"].append(loadavg())

    print()
    summary = {}
    names = [name for name, _ in MILESTONES] + ["exit"]
    for vmm in vmms:
        ok = [r for r in results["runs"][vmm] if r["ok"]]
        row = {"ok": len(ok), "of": n}
        for key in names:
            row[key] = median([r["seconds"][key] for r in ok if key in r["seconds"]])
        row["uptime_at_marker"] = median([r["uptime_at_marker"] for r in ok
                                          if r["uptime_at_marker"] is not None])
        row["kallsyms_ms"] = median([r["kallsyms_ms"] for r in ok if r["kallsyms_ms"] is not None])
        row["marker_runs"] = [round(r["seconds"]["marker"], 2) for r in ok]
        row["exit_runs"] = [round(r["seconds"]["exit"], 2) for r in ok]
        # Each phase: the median over the runs of the time from one milestone of the boot this
        # VMM printed to the next one it printed (drvisor's kallsyms line comes in parallel).
        row["phases"] = []
        present = [k for k in names if k != "kallsyms_read"
                   and all(k in r["seconds"] for r in ok)] if ok else []
        for a, b in zip(["start"] + present, present):
            row["phases"].append((a, b, median([r["seconds"][b] - r["seconds"].get(a, 0.0)
                                                for r in ok])))
        summary[vmm] = row
        print(f"{vmm}: {row['ok']} of {n} boots reached the marker and ended as /init asked; "
              f"median to the marker {row['marker'] or float('nan'):.2f} s (runs "
              f"{row['marker_runs']}), to the exit {row['exit'] or float('nan'):.2f} s (runs "
              f"{row['exit_runs']}); the guest's uptime at the marker {row['uptime_at_marker']} s"
              + (f"; drvisor's own kallsyms read {row['kallsyms_ms']} ms"
                 if row["kallsyms_ms"] is not None else ""))
        if row.get("kallsyms_read") is not None:
            print(f"    its kallsyms line at {row['kallsyms_read']:.2f} s, while the guest boots")
        for a, b, t in row["phases"]:
            print(f"    {a:>13} -> {b:<13} {t:7.2f} s")
    q = summary["qemu"]
    for vmm in vmms:
        d = summary[vmm]
        for key in ("marker", "exit") if vmm != "qemu" else ():
            if d[key] and q[key]:
                summary[f"ratio_{vmm}_{key}"] = d[key] / q[key]
                print(f"ratio {vmm}/qemu, to the {key}: {d[key] / q[key]:.3f}")
    results["summary"] = summary
    print(f"L1 load average (1, 5, 15 min) through the runs: {results['loadavg_l1']}")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(summary[vmm]["ok"] == n for vmm in vmms) else 1


if __name__ == "__main__":
    sys.exit(main())
