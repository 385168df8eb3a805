#!/usr/bin/env bash
# Compiles and runs the first C example of README.md against an installed
# nabla, found through pkg-config as a user would, so neither the README nor
# the install can drift from the API.  Prints one closing line.
#   scripts/check-readme.sh BUILD_DIR INSTALL_PREFIX
set -u
build=${1:-build}
prefix=${2:?usage: check-readme.sh BUILD_DIR INSTALL_PREFIX}
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
dir="$build/readme"
mkdir -p "$dir"
awk '/^```c$/ {on = 1; next} /^```$/ && on {exit} on' README.md > "$dir/model.c"
if [ ! -s "$dir/model.c" ]; then echo "readme: no C example found"; echo "readme: 0 passed, 1 failed"; exit 1; fi
# shellcheck disable=SC2046
if ! cc -std=c11 -Wall -Wextra -Werror "$dir/model.c" -o "$dir/model" \
     $(pkg-config --cflags --libs nabla) -Wl,-rpath,"$prefix/lib"; then
  echo "readme: 0 passed, 1 failed"; exit 1
fi
# The example's loss must fall, and it must write model.dot.
if out=$(cd "$dir" && ./model) && echo "$out" && [ -s "$dir/model.dot" ] &&
   awk '/loss/ {l[n++] = $4} END {exit !(n >= 2 && l[n-1] < l[0])}' <<<"$out"; then
  echo "readme: 1 passed, 0 failed"
else
  echo "readme: 0 passed, 1 failed"; exit 1
fi
