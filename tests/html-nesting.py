#!/usr/bin/env python3
"""Checks that an HTML file nests every element it opens (void elements aside), with Python's
html.parser: prints `well-formed` or each fault, and exits 1 on a fault.

    tests/html-nesting.py FILE
"""
import sys
from html.parser import HTMLParser
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
class Nesting(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.faults = [], []
    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))
    def handle_endtag(self, tag):
        if self.stack and self.stack[-1][0] == tag:
            self.stack.pop()
        else:
            self.faults.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1:]}")
p = Nesting()
p.feed(open(sys.argv[1], encoding="utf-8").read())
p.close()
p.faults += [f"<{t}> at {pos} never closed" for t, pos in p.stack]
print("\n".join(p.faults) or "well-formed")
sys.exit(1 if p.faults else 0)
