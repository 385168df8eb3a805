#!/usr/bin/env bash
# The Debian packages (make deb): built from debian/, lintian-clean at error
# level, with the files and dependencies each should have; the README's
# model built and run against the packaged headers and library.  With
# NB_DEB_INSTALL=1 and root (as CI runs it), the packages are installed
# with dpkg, the README's model is built with plain `pkg-config nabla` (no
# rpath, no LD_LIBRARY_PATH) and a program with `nabla-static`, then the
# packages are removed again; packages installed before are never touched.
# Without the packaging tools and not root, it says so and skips.
# Prints one closing line.
#   tests/deb.sh BUILD_DIR
set -u
build=${1:-build}
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] && ! { command -v dpkg-buildpackage && command -v dh && command -v lintian; } >/dev/null; then
  echo "deb: skipped (apt-get install dpkg-dev debhelper lintian)"; exit 0
fi
pass=0; fail=0
tmp=$(mktemp -d)
installed_here=""
cleanup() {
  [ -n "$installed_here" ] && dpkg -r $installed_here >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
check() {  # check NAME COMMAND...
  local name=$1; shift
  if "$@" >"$tmp/last" 2>&1; then pass=$((pass + 1))
  else fail=$((fail + 1)); echo "FAIL: deb: $name"; sed 's/^/  /' "$tmp/last" | tail -n 20; fi
}
if ! scripts/deb.sh "$build" >"$tmp/deb.log" 2>&1; then
  tail -n 30 "$tmp/deb.log"; echo "deb: 0 passed, 1 failed"; exit 1
fi
pass=$((pass + 1))  # built, lintian clean
out="$build/deb"
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
lib0=$(ls "$out"/libnabla0_*.deb) mpi0=$(ls "$out"/libnabla-mpi0_*.deb) dev=$(ls "$out"/libnabla-dev_*.deb)
has() {  # has DEB PATH...: the package holds each path
  local deb=$1; shift
  local list; list=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for p in "$@"; do grep -qx "./$p" <<<"$list" || { echo "$deb lacks $p"; return 1; }; done
}
check "libnabla0 holds the shared library" has "$lib0" "usr/lib/$ma/libnabla.so.0" usr/share/doc/libnabla0/copyright
check "libnabla-mpi0 holds the MPI library" has "$mpi0" "usr/lib/$ma/libnabla_mpi.so.0"
check "libnabla-dev holds every public header, the static libraries and the .pc files" has "$dev" \
  usr/include/nabla.h usr/include/nabla_nn.h usr/include/nabla_train.h usr/include/nabla_op.h \
  usr/include/nabla_kernel.h usr/include/nabla_graph.h usr/include/nabla.hpp usr/include/nabla_mpi.h "usr/lib/$ma/libnabla.a" "usr/lib/$ma/libnabla.so" \
  "usr/lib/$ma/libnabla_mpi.a" "usr/lib/$ma/pkgconfig/nabla.pc" "usr/lib/$ma/pkgconfig/nabla-static.pc" \
  "usr/lib/$ma/pkgconfig/nabla_mpi.pc"
check "libnabla0 depends on OpenBLAS, Graphviz and zlib" \
  sh -c "dpkg-deb -f '$lib0' Depends | grep -q libopenblas0 && dpkg-deb -f '$lib0' Depends | grep -q libgvc6 && dpkg-deb -f '$lib0' Depends | grep -q zlib1g"
check "libnabla-dev depends on both libraries at its own version" \
  sh -c "dpkg-deb -f '$dev' Depends | grep -q 'libnabla0 (= ' && dpkg-deb -f '$dev' Depends | grep -q 'libnabla-mpi0 (= '"

# Unpacked (any user): the README's model against the packaged files.
root="$tmp/root"
for d in "$lib0" "$mpi0" "$dev"; do dpkg-deb -x "$d" "$root"; done
check "nabla.pc names the multiarch library directory" grep -qx "libdir=/usr/lib/$ma" "$root/usr/lib/$ma/pkgconfig/nabla.pc"
awk '/^```c$/ {on = 1; next} /^```$/ && on {exit} on' README.md > "$tmp/model.c"
# shellcheck disable=SC2046
check "the README's model builds against the unpacked package" \
  cc -std=c11 -Wall -Wextra -Werror -I"$root/usr/include" "$tmp/model.c" -o "$tmp/model" \
     -L"$root/usr/lib/$ma" -lnabla $(pkg-config --libs openblas libgvc zlib) -lm
check "and runs on the packaged libnabla.so.0, its loss falling" \
  sh -c "cd '$tmp' && LD_LIBRARY_PATH='$root/usr/lib/$ma' ./model | awk '/loss/ {l[n++] = \$4} END {exit !(n >= 2 && l[n-1] < l[0])}'"

# Installed (root, NB_DEB_INSTALL=1): as a user of the packages would.
if [ "$(id -u)" = 0 ] && [ "${NB_DEB_INSTALL:-0}" = 1 ]; then
  before=$(dpkg-query -W -f='${Status}\n' libnabla0 libnabla-mpi0 libnabla-dev 2>/dev/null | grep -c "install ok installed")
  if [ "$before" != 0 ]; then
    echo "deb: nabla's packages are installed already; not replacing them (dpkg -r libnabla-dev libnabla-mpi0 libnabla0)"
    fail=$((fail + 1))
  elif dpkg -i "$lib0" "$mpi0" "$dev" >"$tmp/dpkg.log" 2>&1; then
    installed_here="libnabla-dev libnabla-mpi0 libnabla0"
    pass=$((pass + 1))
    check "the README's model builds with pkg-config nabla and runs without an rpath" \
      sh -c "cd '$tmp' && cc -std=c11 -Wall -Wextra -Werror model.c -o model-installed \$(pkg-config --cflags --libs nabla) \
             && ./model-installed | awk '/loss/ {l[n++] = \$4} END {exit !(n >= 2 && l[n-1] < l[0])}'"
    check "a program linked with nabla-static does not load libnabla.so" \
      sh -c "cd '$tmp' && cc -std=c11 model.c -o model-static \$(pkg-config --cflags --libs nabla-static) \
             && ! ldd model-static | grep -q libnabla && ./model-static >/dev/null"
    check "the MPI library links through nabla_mpi.pc" \
      sh -c "cd '$tmp' && printf '#include <nabla_mpi.h>\nint main(void) { return 0; }\n' > m.c \
             && cc -std=c11 m.c -o m \$(pkg-config --cflags --libs nabla_mpi) && ./m"
  else
    cat "$tmp/dpkg.log"; fail=$((fail + 1))
  fi
fi
echo "deb: $pass passed, $fail failed"
[ "$fail" = 0 ]
