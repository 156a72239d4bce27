#!/usr/bin/env python3
"""Checks one `drvisor ci --html` report against what a real browser made of it and against the
JSON report of the same run. Prints each fault and exits 1 on any.

    tests/html-report/check.py REPORT.html DOM.html REPORT.json SCREENSHOT.png

- DOM.html is the browser's own serialisation of the page (chromium-headless-shell --dump-dom).
  Its element tree (tags, attributes, non-blank text, in order) must be exactly the source's as
  Python's html.parser reads it: a browser silently repairs bad markup (a block element closes an
  open <p>, stray content is moved out of a <table>, an unclosed element swallows what follows),
  and any such repair shows up here as a difference.
- What the browser shows must be what the JSON says: the summary's counts, one section per spec,
  one row per case with its status, name, expected and observed text, a <details> holding the
  evidence of each case that has it (the offending hit of a failure), and in the timeline each
  hit check's rows adding up to the hits its case observed.
  Text is compared as a page can show it: CR LF and a lone CR read as LF (the HTML parser's
  input preprocessing), control characters as U+FFFD (html.rs's escape).
- SCREENSHOT.png (the headless shell's --screenshot) must be a real picture of the page: more
  than a handful of colours, and the stylesheet's table header background among them (the red
  tint of failed rows too, where a case failed).
"""
import json
import re
import struct
import sys
import zlib
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
STATUS_WORD = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
# Fill colours of the page's stylesheet (html.rs): th's background, a failed row's background.
HEADER_RGB = (0xF6, 0xF8, 0xFA)
FAILED_ROW_RGB = (0xFF, 0xF5, 0xF5)

faults = []


def shown(text):
    """`text` as a page can show it: line ends as the HTML parser reads them (CR LF and a lone
    CR become LF), and the control characters HTML does not allow as the report writes them
    (U+FFFD; tab and line ends stay)."""
    if text is None:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join("\ufffd" if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) < 0xA0
                   else c for c in text)


def fault(text):
    faults.append(text)


class Node:
    def __init__(self, tag, attrs, pos):
        self.tag, self.attrs, self.pos = tag, dict(attrs), pos
        # Elements and non-blank text, in document order.
        self.children = []

    def elements(self, tag=None):
        return [c for c in self.children if isinstance(c, Node) and tag in (None, c.tag)]

    def find_all(self, tag):
        for c in self.elements():
            if c.tag == tag:
                yield c
            yield from c.find_all(tag)

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self):
        return set(self.attrs.get("class", "").split())

    def name(self):
        ident = f"#{self.attrs['id']}" if "id" in self.attrs else ""
        return f"{self.tag}{ident}"


class Tree(HTMLParser):
    """The element tree of a page, nesting exactly as written: an end tag that does not close
    the innermost open element is a fault, never repaired."""

    def __init__(self, label):
        super().__init__(convert_charrefs=True)
        self.label = label
        self.root = Node("#document", [], (0, 0))
        self.stack = [self.root]
        self.doctype = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.getpos())
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        # <line .../> in SVG: an element without children.
        self.stack[-1].children.append(Node(tag, attrs, self.getpos()))

    def handle_endtag(self, tag):
        if len(self.stack) > 1 and self.stack[-1].tag == tag:
            self.stack.pop()
        else:
            fault(f"{self.label}: </{tag}> at line {self.getpos()[0]} closes "
                  f"<{self.stack[-1].tag}> (opened at line {self.stack[-1].pos[0]})")

    def handle_data(self, data):
        # Blank text between elements is layout of the source; the parser keeps or drops it
        # depending on where it stands, and it shows nothing.
        if data.strip():
            self.stack[-1].children.append(data)

    def finish(self):
        self.close()
        for n in self.stack[1:]:
            fault(f"{self.label}: <{n.tag}> at line {n.pos[0]} is never closed")
        return self.root


def parse(label, text):
    t = Tree(label)
    t.feed(text)
    root = t.finish()
    return t.doctype, root


def same_tree(src, dom, path):
    """The first difference between two trees, as a fault; True when there is none."""
    here = f"{path}>{dom.name()}" if path else dom.name()
    if src.tag != dom.tag:
        fault(f"{here}: the browser made <{dom.tag}> where the source has <{src.tag}> "
              f"(source line {src.pos[0]})")
        return False
    if src.attrs != dom.attrs:
        fault(f"{here}: attributes {dom.attrs} in the browser, {src.attrs} in the source "
              f"(line {src.pos[0]})")
        return False
    a, b = src.children, dom.children
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if isinstance(x, Node) and isinstance(y, Node):
            if not same_tree(x, y, here):
                return False
            continue
        if x != y:
            fault(f"{here} (source line {src.pos[0]}), child {i}: the browser has "
                  f"{describe(y)}, the source {describe(x)}")
            return False
    return True


def describe(child):
    if child is None:
        return "nothing"
    if isinstance(child, Node):
        return f"<{child.tag}>"
    return repr(child[:80])


def check_structure(source_text, dom_text):
    src_doctype, src = parse("source", source_text)
    dom_doctype, dom = parse("browser DOM", dom_text)
    if (src_doctype or "").lower() != "doctype html":
        fault(f"source: doctype {src_doctype!r}, not `DOCTYPE html` (the browser would use "
              "quirks mode)")
    if (dom_doctype or "").lower() != "doctype html":
        fault(f"browser DOM: doctype {dom_doctype!r}")
    # Nothing may be implicit: the source writes html, head, body and tbody itself.
    for tag in ("html", "head", "body"):
        if not list(src.find_all(tag)):
            fault(f"source: no <{tag}> (the browser would add it)")
    for table in src.find_all("table"):
        if any(c.tag == "tr" for c in table.elements()):
            fault(f"source line {table.pos[0]}: a <tr> straight in <table> (the browser adds "
                  "a <tbody>)")
    same_tree(src, dom, "")
    return dom


def status_of(row):
    for word in STATUS_WORD:
        if word in row.classes():
            return word
    return None


def check_timeline(section, spec, label):
    """Each hit check's rows in the SVG add up to the hits its case observed."""
    svgs = list(section.find_all("svg"))
    hit_cases = {}
    for c in spec["cases"]:
        m = re.match(r"(\d+) hit\(s\)", c.get("observed", ""))
        if c["status"] != "skipped" and m and " of " in c.get("expected", ""):
            hit_cases[shown(c["name"])] = int(m.group(1))
    if not svgs:
        if hit_cases:
            fault(f"{label}: no timeline, but hit checks {sorted(hit_cases)} ran")
        return
    if len(svgs) != 1:
        fault(f"{label}: {len(svgs)} timelines")
        return
    svg = svgs[0]
    # Rows: a <text> with a <title> (the check's whole name) and its label, then its
    # baseline <line> and tick <line>s (a run with times), or its bar <rect> (without).
    rows, row = [], None
    for el in svg.elements():
        titles = el.elements("title") if el.tag == "text" else []
        if titles:
            row = {"check": titles[0].text(), "label": el.text()[len(titles[0].text()):],
                   "marks": []}
            rows.append(row)
        elif el.tag in ("line", "rect") and row is not None:
            row["marks"].append(el)
        elif el.tag == "text":
            row = None  # the axis
    hits_by_check = {}
    for r in rows:
        m = re.search(r": (\d+) hit\(s\)", r["label"])
        n = int(m.group(1)) if m else 0
        if not m and not r["label"].endswith(": no hits"):
            fault(f"{label}: timeline row label {r['label']!r} gives no hit count")
        hits_by_check[r["check"]] = hits_by_check.get(r["check"], 0) + n
        lines = [e for e in r["marks"] if e.tag == "line"]
        rects = [e for e in r["marks"] if e.tag == "rect"]
        if rects:
            if len(rects) != 1 or lines:
                fault(f"{label}: the count bar row of {r['check']!r} has marks {r['marks']}")
            elif (int(rects[0].attrs.get("width", "0")) > 0) != (n > 0):
                fault(f"{label}: {n} hit(s) of {r['check']!r} but a bar of width "
                      f"{rects[0].attrs.get('width')}")
            continue
        # The first line is the row's baseline; each tick is one pixel column with a hit in
        # it (hits closer than a pixel share a tick), so 1..n ticks for n timed hits.
        ticks = lines[1:]
        untimed = re.search(r", (\d+) without a time", r["label"])
        timed = n - (int(untimed.group(1)) if untimed else 0)
        if not lines:
            fault(f"{label}: the timeline row of {r['check']!r} has no baseline")
        elif timed == 0 and ticks:
            fault(f"{label}: {len(ticks)} tick(s) for no timed hit of {r['check']!r}")
        elif timed > 0 and not 1 <= len(ticks) <= timed:
            fault(f"{label}: {len(ticks)} tick(s) for {timed} timed hit(s) of {r['check']!r}")
        xs = [int(t.attrs.get("x1", "-1")) for t in ticks]
        base = lines[0].attrs if lines else {}
        lo, hi = int(base.get("x1", "0")), int(base.get("x2", "0"))
        if any(not lo <= x <= hi for x in xs):
            fault(f"{label}: ticks of {r['check']!r} at {xs} outside the axis {lo}..{hi}")
        if len(set(xs)) != len(xs):
            fault(f"{label}: two ticks of {r['check']!r} in one pixel column: {xs}")
    for name, n in hit_cases.items():
        if name not in hits_by_check:
            fault(f"{label}: hit check {name!r} ({n} hit(s)) has no timeline row")
        elif hits_by_check[name] != n:
            fault(f"{label}: the timeline shows {hits_by_check[name]} hit(s) of {name!r}, "
                  f"the JSON {n}")
    return sum(hits_by_check.values())


def check_content(dom, report):
    t = report["totals"]
    summary = [p for p in dom.find_all("p") if p.attrs.get("id") == "summary"]
    if len(summary) != 1:
        fault(f"{len(summary)} summary paragraphs")
    else:
        want = (f"{t['specs']} spec(s), {t['cases']} case(s): {t['passed']} passed, "
                f"{t['failed']} failed, {t['skipped']} skipped in ")
        text = summary[0].text()
        if not text.startswith(want) or not text.endswith(f"(exit {report['exit_code']})"):
            fault(f"summary {text!r}, the JSON says {want!r}... (exit {report['exit_code']})")
    sections = list(dom.find_all("section"))
    if len(sections) != len(report["specs"]):
        fault(f"{len(sections)} spec sections, the JSON has {len(report['specs'])} specs")
    rows_seen = hits_seen = 0
    for i, (section, spec) in enumerate(zip(sections, report["specs"])):
        label = f"spec {spec['name']!r}"
        if section.attrs.get("id") != f"spec-{i}":
            fault(f"{label}: section id {section.attrs.get('id')!r}, not spec-{i}")
        h2 = list(section.find_all("h2"))
        if [h.text() for h in h2] != [shown(spec["name"])]:
            fault(f"{label}: headings {[h.text() for h in h2]}")
        if "spec_error" in spec:
            errors = [p.text() for p in section.find_all("p") if "error" in p.classes()]
            if errors != [f"spec error: {shown(spec['spec_error'])}"]:
                fault(f"{label}: spec error shown as {errors}")
        rows = [r for r in section.find_all("tr") if "case" in r.classes()]
        if len(rows) != len(spec["cases"]):
            fault(f"{label}: {len(rows)} case rows, the JSON has {len(spec['cases'])} cases")
        for row, case in zip(rows, spec["cases"]):
            rows_seen += 1
            check_row(row, case, f"{label} case {case['name']!r}")
        hits_seen += check_timeline(section, spec, label) or 0
    return rows_seen, hits_seen


def check_row(row, case, label):
    if status_of(row) != case["status"]:
        fault(f"{label}: row class {row.attrs.get('class')!r}, status {case['status']}")
    cells = row.elements("td")
    if len(cells) != 5:
        fault(f"{label}: {len(cells)} cells, not 5")
        return
    observed = case.get("reason") if case["status"] == "skipped" else case.get("observed")
    want = [shown(t) for t in (STATUS_WORD[case["status"]], case["name"],
                                case.get("expected", ""), observed or "")]
    got = [c.text() for c in cells[:4]]
    if got != want:
        fault(f"{label}: cells {got}, the JSON {want}")
    details = list(cells[4].find_all("details"))
    context = shown(case.get("context"))
    if context is None:
        if details or cells[4].children:
            fault(f"{label}: evidence shown, but the JSON has no context")
        return
    if len(details) != 1:
        fault(f"{label}: {len(details)} <details> for its context")
        return
    summary = details[0].elements("summary")
    pre = details[0].elements("pre")
    want_summary = "the offending hit" if case["status"] == "failed" else "the captured hit"
    if [s.text() for s in summary] != [want_summary]:
        fault(f"{label}: details summary {[s.text() for s in summary]}, not {want_summary!r}")
    if [p.text() for p in pre] != [context]:
        fault(f"{label}: the evidence shown differs from the JSON's context:\n"
              f"  shown {[p.text() for p in pre]!r}\n  JSON  {context!r}")


def png_pixels(path):
    """(width, height, rows of RGB(A) tuples) of an 8-bit RGB or RGBA PNG, decoded here."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = ihdr
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, "
                         f"interlace {interlace}")
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = prev[i], prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        elif kind != 0:
            raise ValueError(f"bad PNG filter {kind} in row {y}")
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


def check_screenshot(path, any_failed):
    try:
        width, height, channels, rows = png_pixels(path)
    except (OSError, ValueError, zlib.error, struct.error, TypeError) as e:
        fault(f"screenshot {path}: {e}")
        return
    colours = set()
    for line in rows:
        for x in range(0, len(line), channels):
            colours.add(tuple(line[x:x + 3]))
    if len(colours) < 16:
        fault(f"screenshot {path} ({width}x{height}): only {len(colours)} colour(s): blank")
    if HEADER_RGB not in colours:
        fault(f"screenshot {path}: no table header background #f6f8fa: no table drawn, "
              "or the stylesheet was not applied")
    if any_failed and FAILED_ROW_RGB not in colours:
        fault(f"screenshot {path}: no failed row background #fff5f5, though a case failed")
    return width, height, len(colours)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    source_path, dom_path, json_path, png_path = sys.argv[1:]
    # The HTML parser's input preprocessing: CR LF and a lone CR are LF.
    source = open(source_path, encoding="utf-8", newline="").read()
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    dom_text = open(dom_path, encoding="utf-8").read()
    report = json.load(open(json_path, encoding="utf-8"))
    dom = check_structure(source, dom_text)
    rows, hits = check_content(dom, report)
    any_failed = report["totals"]["failed"] > 0
    shot = check_screenshot(png_path, any_failed)
    if faults:
        print("\n".join(f"FAULT {f}" for f in faults))
        sys.exit(1)
    print(f"ok: the browser's DOM is the source's tree; {len(report['specs'])} spec(s), "
          f"{rows} case row(s) and {hits} timeline hit(s) agree with the JSON; screenshot "
          f"{shot[0]}x{shot[1]} with {shot[2]} colours")


main()
