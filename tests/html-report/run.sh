#!/usr/bin/env bash
# drvisor ci's HTML report opened in a real browser: Chromium's headless shell (Debian's
# chromium-headless-shell) loads the reports of the example suites (passing, and failing on
# purpose), of hostile.toml (names full of markup) and of many-hits.toml (a timeline label
# longer than the usual column), dumps the DOM it built and takes a screenshot. check.py then
# requires the browser's element tree to be exactly the source's (a browser silently repairs bad
# markup; any repair is a difference), the page to show what the JSON report of the same run
# says (counts, one row per case, each hit context in a <details>, the timeline's hits per
# check), and the screenshot to be a drawn page, not a blank one. A copy of each report with
# measure.html's script in it has the browser measure its layout: layout.py requires every
# timeline label to end before its plot, and the page to fit the window. Last, two pages broken
# on purpose must fail check.py: the check itself is checked. About a minute.
#
#   tests/html-report/run.sh [DRVISOR_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
drvisor=${1:-target/debug/drvisor}
[ -x "$drvisor" ] || cargo build -p drvisor --bin drvisor
shell=/usr/bin/chromium-headless-shell
if [ ! -x "$shell" ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium-headless-shell
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
browser() {  # FLAG URL: the headless shell at a fixed size; its chatter goes to a log
  timeout 60 "$shell" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,900 "$@" 2>>"$work/browser.log"
}
open_page() {  # NAME: NAME.html in the browser, to NAME.dom.html and NAME.png
  local url=file://$(realpath "$work/$1.html")
  browser --dump-dom "$url" > "$work/$1.dom.html" &&
    browser --screenshot="$work/$1.png" "$url" > /dev/null && [ -s "$work/$1.dom.html" ] || {
    cat "$work/browser.log"; echo "html-report: the headless shell failed on $1" >&2; return 1
  }
}
measure() {  # NAME: a copy of NAME.html with measure.html's script, laid out; layout.py reads it
  awk -v script=tests/html-report/measure.html \
    '/^<\/body>$/ { while ((getline line < script) > 0) print line } { print }' \
    "$work/$1.html" > "$work/$1.measure.html"
  browser --dump-dom "file://$(realpath "$work/$1.measure.html")" > "$work/$1.measured.html" &&
    python3 tests/html-report/layout.py "$work/$1.measured.html"
}
check() {  # NAME [JSON]
  python3 tests/html-report/check.py "$work/$1.html" "$work/$1.dom.html" \
    "$work/${2:-$1}.json" "$work/$1.png"
}
run() {  # NAME EXPECTED_EXIT SPEC...
  local name=$1 want=$2; shift 2
  local code=0
  "$drvisor" ci "$@" --jobs 2 --html "$work/$name.html" --json "$work/$name.json" > "$work/$name.log" || code=$?
  if [ "$code" != "$want" ]; then
    cat "$work/$name.log"; echo "html-report: $name exited $code, wanted $want" >&2; status=1; return
  fi
  echo "== $name (exit $code)"
  open_page "$name" && check "$name" || status=1
  measure "$name" || status=1
}
run examples 0 ci/examples/*.toml
run failing 1 ci/examples/failing/*.toml
hostile="$work/<b>&amp;\"x'<div>.toml"
cp tests/html-report/hostile.toml "$hostile"
run hostile 1 "$hostile"
run many-hits 0 tests/html-report/many-hits.toml

# The check must catch what it is there for: a <div> in the summary's <p> (the browser closes
# the <p> before it) and a case row left out.
broken() {  # NAME FAULT-TEXT SED-SCRIPT
  local name=$1 fault=$2 out
  sed -e "$3" "$work/failing.html" > "$work/$name.html"
  if cmp -s "$work/failing.html" "$work/$name.html"; then
    echo "html-report: breaking the page ($name) changed nothing" >&2; status=1; return
  fi
  open_page "$name" || { status=1; return; }
  if out=$(check "$name" failing); then
    echo "html-report: check.py passed a page broken on purpose ($name)" >&2; status=1
  elif ! grep -qF -- "$fault" <<<"$out"; then
    echo "$out"; echo "html-report: check.py failed $name, but not with: $fault" >&2; status=1
  else
    echo "== $name: refused ($(grep -F -- "$fault" <<<"$out" | head -n 1))"
  fi
}
broken div-in-p "the browser has nothing, the source <div>" 's|<span class="passed">|<div>x</div>&|'
broken row-left-out "case rows, the JSON has" '0,/^<tr class="case failed">/{/^<tr class="case failed">/d}'
exit $status
