#!/usr/bin/env bash
# Opens a backward stepper page in headless Chromium (Debian's package),
# steps through it with the arrow key, and checks that the highlighted op
# changes at each step, in reverse tape order, starting from none.
# Skips (exit 0) when Chromium is not installed.
set -u
bin=${1:-build}/examples
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "browser: 0 passed, 0 failed, 1 skipped (apt-get install chromium)"
  exit 0
fi
tmp=$(mktemp -d /tmp/nabla-browser.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$bin/forward3" --html "$tmp/page.html" > /dev/null || { echo "browser: 0 passed, 1 failed"; exit 1; }
# The page's #selftest mode presses ArrowRight once per frame and records
# "frame:highlighted-op" read from the SVG that is showing.
result=$(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/profile" --virtual-time-budget=10000 --dump-dom \
  "file://$tmp/page.html#selftest" 2>/dev/null | sed -n 's/.*<pre id="selftest">\([^<]*\)<\/pre>.*/\1/p')
echo "stepper: $result"
# expected: "frames N 0:none 1:opK 2:opJ ..." with K > J > ... and N frames
if awk -v r="$result" 'BEGIN {
    n = split(r, f, " ");
    if (f[1] != "frames" || f[3] != "0:none" || n != f[2] + 2) exit 1;
    last = 1e9;
    for (i = 4; i <= n; i++) {
      split(f[i], p, ":");
      if (p[1] != i - 3 || substr(p[2], 1, 2) != "op") exit 1;
      op = substr(p[2], 3) + 0;
      if (op >= last) exit 1;
      last = op;
    }
  }'; then
  echo "browser: 1 passed, 0 failed"
else
  echo "browser: 0 passed, 1 failed"; exit 1
fi
