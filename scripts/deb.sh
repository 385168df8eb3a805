#!/usr/bin/env bash
# make deb: builds the Debian packages described in debian/ (libnabla0,
# libnabla-mpi0, libnabla-dev) from a copy of the tracked files, in
# BUILD/deb/src, puts the .deb files in BUILD/deb and runs lintian on them,
# failing on any error-level tag.  Its build tools come from
# `scripts/deps.sh deb` (installed as root, else the apt-get line printed).
#   scripts/deb.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
scripts/deps.sh deb
version=$(dpkg-parsechangelog -S Version)
out="$build/deb"
stamp="$out/.made-by-make-deb"
# Only a directory this script made is replaced.
if [ -e "$out" ] && [ ! -e "$stamp" ]; then
  echo "make deb: $out exists and was not made by make deb; move it away first" >&2; exit 1
fi
rm -rf "$out"
src="$out/src/nabla-$version"
mkdir -p "$src"
touch "$stamp"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # the tracked and new (not ignored) files as they are in the work tree
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && cp -P --parents -- "$f" "$src/"
  done
else
  tar --exclude="./$build" --exclude=./build -cf - . | tar -xf - -C "$src"
fi
log="$out/build.log"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b -j2) >"$log" 2>&1; then
  tail -n 40 "$log"; echo "make deb: dpkg-buildpackage failed (whole log: $log)" >&2; exit 1
fi
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out/"
changes=$(ls "$out"/*.changes)
if ! lintian --fail-on error --tag-display-limit 0 "$changes" >"$out/lintian.log" 2>&1; then
  cat "$out/lintian.log"; echo "make deb: lintian found errors" >&2; exit 1
fi
echo "make deb: $(cd "$out" && ls ./*.deb | tr '\n' ' ')in $out; lintian: $(grep -c '^E:' "$out/lintian.log") errors, $(grep -c '^W:' "$out/lintian.log") warnings ($out/lintian.log)"
