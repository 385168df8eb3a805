#!/usr/bin/env bash
# Opens every lesson's backward stepper in headless Chromium (Debian's
# package) at a projector's 1024x768 and checks, through the page's own
# #selftest mode (which steps with the arrow key and reports what it saw):
#   - the forward pass comes first, an op a frame in tape order starting
#     from none, with the value that just appeared in view; then backward,
#     the highlighted op changing at each step in reverse tape order;
#   - the drawing keeps its size and every shape its place in every frame;
#   - the address follows as #frame=N, and #frame=2 opens on frame 2;
#   - no text is drawn under 14 px in any frame, at the views the page's
#     camera chose (its font's size on the screen, and its box's height);
#   - in every frame the camera keeps in view an input that has just received
#     its contribution (the op itself is reported: a far parameter's long
#     edge may leave it out);
#   - the view (the graph) has at least 80% of the window, the legend hidden;
#   - "fit" never goes under 14 px, and enlarges a small graph
#     (gradient_descent);
#   - no grey edge (no gradient: data, targets) is ever lit.
# Skips (exit 0) when Chromium is not installed.  Pages of hostile names
# (their script runs, the names show literally) are opened by
# tests/escape_check.py, which build/tests/test_escape runs.
set -u
bin=${1:-build}/examples
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "browser: 0 passed, 0 failed, 1 skipped (apt-get install chromium)"
  exit 0
fi
tmp=$(mktemp -d /tmp/nabla-browser.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
data=${NABLA_FASHION_DIR:-/usr/share/datasets/fashion-mnist}
passed=0 failed=0 skipped=0

# The lessons' pages.
"$bin/gradient_descent" --html "$tmp/gradient_descent.html" > /dev/null
"$bin/forward3" --html "$tmp/forward3.html" > /dev/null
"$bin/logreg" --epochs 20 --html "$tmp/logreg.html" > /dev/null
"$bin/newton" --html "$tmp/newton.html" > /dev/null
"$bin/custom_op" --html "$tmp/custom_op.html" > /dev/null
"$bin/demo" --epochs 3 --out "$tmp/demo" --html "$tmp/demo.html" > /dev/null 2>&1
"$bin/rnn" --iters 20 --html "$tmp/rnn.html" > /dev/null
"$bin/attention" --iters 5 --html "$tmp/attention.html" > /dev/null
pages="gradient_descent forward3 logreg newton custom_op demo rnn attention"
if [ -e "$data/train-images-idx3-ubyte.gz" ]; then
  "$bin/mlp" --data "$data" --epochs 1 --train-limit 64 --hidden 16 --html "$tmp/mlp.html" > /dev/null 2>&1
  "$bin/cnn" --data "$data" --epochs 1 --train-limit 64 --test-limit 100 --save "$tmp/cnn.nbp" \
    --html "$tmp/cnn.html" > /dev/null 2>&1
  pages="$pages mlp cnn"
else
  echo "browser: mlp and cnn skipped (no Fashion-MNIST in $data: apt-get install dataset-fashion-mnist)"
  skipped=$((skipped + 2))
fi
if [ -r /usr/share/dict/words ]; then
  "$bin/charlm" --iters 1 --samples 0 --limit 2000 --html "$tmp/charlm.html" > /dev/null
  pages="$pages charlm"
else
  echo "browser: charlm skipped (apt-get install wamerican)"
  skipped=$((skipped + 1))
fi

for page in $pages; do
  if [ ! -s "$tmp/$page.html" ]; then
    echo "browser: $page: no page was written"
    failed=$((failed + 1))
    continue
  fi
  result=$(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --window-size=1024,768 \
    --user-data-dir="$tmp/profile" --virtual-time-budget=10000 --dump-dom \
    "file://$tmp/$page.html#selftest,frame=2" 2>/dev/null |
    sed -n 's/.*<pre id="selftest">\([^<]*\)<\/pre>.*/\1/p')
  # expected: "frames N 0:none 1:op0 ... F-1:opF-2 F:opK F+1:opJ ...
  # same-layout true hash true text-px X font-px F forward F made-seen F/F
  # op-seen A/S got-seen S/S view-share V fit-px P start 2 grey-lit 0",
  # with K > J > ...
  why=$(awk -v r="$result" -v page="$page" 'BEGIN {
      n = split(r, f, " ");
      if (f[1] != "frames" || n < 4) { print "no self-test report"; exit }
      frames = f[2];
      if (f[3] != "0:none") { print "frame 0 highlights an op"; exit }
      for (i = 3 + frames; i < n; i += 2) v[f[i]] = f[i + 1];
      forward = v["forward"] + 0;
      if (forward < 2) { print "no frames of the forward pass"; exit }
      if (v["made-seen"] != forward "/" forward) { print "a value that just appeared was out of view (" v["made-seen"] ")"; exit }
      last = 1e9;
      update = v["update"] + 0;
      for (i = 4; i < 3 + frames; i++) {
        split(f[i], p, ":");
        if (i - 3 >= frames - update) { # the update frame ends it, no op lit
          if (p[2] != "none") { print "the update frame " i - 3 " lights " p[2]; exit }
          continue;
        }
        if (p[1] != i - 3 || substr(p[2], 1, 2) != "op") { print "frame " i - 3 " highlights " p[2]; exit }
        op = substr(p[2], 3) + 0;
        if (i - 3 < forward) { # the forward pass: op k - 1 in frame k
          if (op != i - 4) { print "forward frame " i - 3 " lights op" op ": not tape order"; exit }
          continue;
        }
        if (op >= last) { print "op" op " lit after op" last ": not reverse tape order"; exit }
        last = op;
      }
      if (v["same-layout"] != "true") { print "the layout moved between frames"; exit }
      if (v["hash"] != "true") { print "the address did not follow as #frame=N"; exit }
      if (v["text-px"] + 0 < 14) { print "text is " v["text-px"] " px high, under 14"; exit }
      if (v["font-px"] + 0 < 14) { print "a font is drawn at " v["font-px"] " px, under 14"; exit }
      split(v["got-seen"], g, "/");
      if (g[2] != frames - forward - update || g[1] != g[2]) { print "an input that just received its gradient was out of view (" v["got-seen"] " frames)"; exit }
      if (v["view-share"] + 0 < 0.8) { print "the graph has " v["view-share"] " of the window, under 0.8"; exit }
      if (v["fit-px"] + 0 < 14) { print "fit draws text at " v["fit-px"] " px"; exit }
      if (page == "gradient_descent" && v["fit-px"] + 0 <= 14) { print "fit did not enlarge a small graph (" v["fit-px"] " px)"; exit }
      if (v["start"] != "2") { print "#frame=2 opened on frame " v["start"]; exit }
      if (v["grey-lit"] != "0") { print v["grey-lit"] " grey edges were lit"; exit }
    }')
  if [ -z "$why" ]; then
    echo "browser: $page: $result"
    passed=$((passed + 1))
  else
    echo "browser: $page: FAILED: $why (report: ${result:-none})"
    failed=$((failed + 1))
  fi
done
# The gallery (make docs): no internal words, and no graph wider than the
# 1024-pixel window.
if scripts_dir=$(dirname "$0")/../scripts && "$scripts_dir/gallery.sh" "${1:-build}" "$tmp/docs" > /dev/null 2>&1; then
  why=""
  if grep -il 'seed 0\|seed0' "$tmp/docs"/*.html > /dev/null; then
    why="internal words in $(grep -il 'seed 0\|seed0' "$tmp/docs"/*.html | xargs -n1 basename | tr '\n' ' ')"
  fi
  for g in "$tmp/docs"/*.graph.html; do
    [ -n "$why" ] && break
    fit=$(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync --window-size=1024,768 \
      --user-data-dir="$tmp/profile" --virtual-time-budget=10000 --dump-dom "file://$g" 2>/dev/null |
      sed -n 's/.*<pre id="fit" hidden="">\([^<]*\)<\/pre>.*/\1/p')
    # "page W window V"
    set -- $fit
    if [ "${1:-}" != page ] || [ "${2:-0}" -gt "${4:-0}" ]; then why="$(basename "$g"): ${fit:-no report}"; fi
  done
  if [ -z "$why" ]; then
    echo "browser: gallery: $(ls "$tmp/docs"/*.graph.html | wc -l) graph pages fit 1024 px, no internal words"
    passed=$((passed + 1))
  else
    echo "browser: gallery: FAILED: $why"
    failed=$((failed + 1))
  fi
else
  echo "browser: gallery: FAILED: scripts/gallery.sh did not finish"
  failed=$((failed + 1))
fi
echo "browser: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
