#!/usr/bin/env python3
"""Checks what the browser laid out of a report, from the DOM it dumped of a copy with
measure.html inserted: every timeline label ends before its row's plot starts (a label that runs
into the ticks is unreadable), and the page is no wider than the window (no sideways scroll).
Prints each fault and exits 1 on any.

    tests/html-report/layout.py MEASURED-DOM.html
"""
import html
import json
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
found = re.findall(r'<pre id="layout">(.*?)</pre>', text, re.S)
try:
    layout = json.loads(html.unescape(found[-1]))
except (IndexError, ValueError) as e:
    sys.exit(f"FAULT {sys.argv[1]}: no layout measured (did the script run?): {e}")
faults = []
for row in layout["rows"]:
    if not row["label_end"] < row["plot_start"]:
        faults.append(f"the timeline label of {row['check']!r} ends at x={row['label_end']:.1f}, "
                      f"past its plot's start at x={row['plot_start']}")
if layout["page_width"] > layout["viewport_width"]:
    faults.append(f"the page is {layout['page_width']} px wide in a {layout['viewport_width']} px "
                  "window")
if faults:
    print("\n".join(f"FAULT {f}" for f in faults))
    sys.exit(1)
print(f"ok: {len(layout['rows'])} timeline label(s) end before their plot; the page fits "
      f"{layout['viewport_width']} px")
