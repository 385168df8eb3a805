#!/usr/bin/env bash
# Compiles and runs the first C example of README.md against the built
# library, so the README cannot drift from the API.  Prints one closing line.
set -u
build=${1:-build}
dir="$build/readme"
mkdir -p "$dir"
awk '/^```c$/ {on = 1; next} /^```$/ && on {exit} on' README.md > "$dir/model.c"
if [ ! -s "$dir/model.c" ]; then echo "readme: no C example found"; echo "readme: 0 passed, 1 failed"; exit 1; fi
# shellcheck disable=SC2046
if ! cc -std=c11 -Wall -Wextra -Werror -Iinclude "$dir/model.c" -o "$dir/model" \
     "$build/libnabla.a" $(pkg-config --libs openblas libgvc) -lm; then
  echo "readme: 0 passed, 1 failed"; exit 1
fi
# The example's loss must fall, and it must write model.dot.
if out=$(cd "$dir" && ./model) && echo "$out" && [ -s "$dir/model.dot" ] &&
   awk '/loss/ {l[n++] = $4} END {exit !(n >= 2 && l[n-1] < l[0])}' <<<"$out"; then
  echo "readme: 1 passed, 0 failed"
else
  echo "readme: 0 passed, 1 failed"; exit 1
fi
