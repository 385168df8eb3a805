#!/usr/bin/env bash
# `make install` into a private prefix, used as a library user would:
# through pkg-config, shared (with the rpath or LD_LIBRARY_PATH the README
# gives) and static (nabla-static.pc); then a staged install (DESTDIR) and
# `make uninstall`.  Prints one closing line.
#   tests/install.sh BUILD_DIR
set -u
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
pass=0; fail=0
check() {  # check NAME COMMAND...: runs the command, counts it
  local name=$1; shift
  if "$@" >"$tmp/last" 2>&1; then pass=$((pass + 1))
  else fail=$((fail + 1)); echo "FAIL: install: $name"; sed 's/^/  /' "$tmp/last" | tail -n 20; fi
}
make --no-print-directory BUILD="$build" install PREFIX="$prefix" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log"; echo "install: 0 passed, 1 failed"; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# A private prefix: install says how to link against it.
check "make install names the rpath and LD_LIBRARY_PATH for a private prefix" \
  grep -q -- "-Wl,-rpath,$prefix/lib" "$tmp/install.log"

# The program: a product and its gradient (OpenBLAS), a parameter file
# (zlib) and a rendered graph (Graphviz), with values worked by hand:
# [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]], sum 134; d sum/dA = row
# sums of B = [11,15,11,15].
cat > "$tmp/prog.c" <<'EOF2'
#include <nabla_train.h>
#include <stdio.h>
int main(void) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *A = nb_from_array(NULL, NB_F64, NB_SHAPE(2, 2), (double[]){1, 2, 3, 4});
    nb_tensor *B = nb_from_array(NULL, NB_F64, NB_SHAPE(2, 2), (double[]){5, 6, 7, 8});
    nb_requires_grad(A, true);
    nb_tensor *s = nb_sum(tp, nb_matmul(tp, A, B));
    if (nb_backward(s) != NB_OK) { fprintf(stderr, "%s\n", nb_last_error()); return 1; }
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "A", nb_copy(NULL, A));
    nb_status saved = nb_params_save(ps, "prog.nbp");
    nb_status drawn = nb_dot_save(tp, "prog.dot", NULL);
    if (drawn == NB_OK) drawn = nb_dot_render("prog.dot", "prog.svg", "svg");
    printf("%g %g %g %g %g %s %s\n", nb_item(s), nb_grad_get(A, 0), nb_grad_get(A, 1), nb_grad_get(A, 2),
           nb_grad_get(A, 3), nb_status_string(saved), nb_status_string(drawn));
    nb_params_free(ps); nb_tape_free(tp); nb_tensor_free(A); nb_tensor_free(B);
    return 0;
}
EOF2
expect="134 11 15 11 15 no error no error"  # nb_status_string(NB_OK) twice
runs() {  # runs DIR BINARY [ENV...]: the program prints the expected line
  local dir=$1 bin=$2; shift 2
  local out; out=$(cd "$dir" && env "$@" "$bin") || return 1
  [ "$out" = "$expect" ] || { echo "printed '$out', expected '$expect'"; return 1; }
  [ -s "$dir/prog.svg" ] || { echo "no prog.svg"; return 1; }; rm -f "$dir/prog.svg"
}
needs_libnabla() { readelf -d "$1" | grep -q 'NEEDED.*libnabla\.so\.0'; }
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror "$tmp/prog.c" -o "$tmp/shared" $(pkg-config --cflags --libs nabla) 2>"$tmp/cc.log"
check "builds with pkg-config --cflags --libs nabla" test -x "$tmp/shared"
check "the shared program needs libnabla.so.0" needs_libnabla "$tmp/shared"
# Without help, the loader cannot find a private prefix (what the README
# warns about) ...
check "without an rpath or LD_LIBRARY_PATH it stops with the loader's message" \
  bash -c "! (cd '$tmp' && ./shared) 2>'$tmp/loader' && grep -q 'libnabla.so.0' '$tmp/loader'"
# ... LD_LIBRARY_PATH finds it ...
check "runs with LD_LIBRARY_PATH=\$(pkg-config --variable=libdir nabla)" \
  runs "$tmp" ./shared LD_LIBRARY_PATH="$(pkg-config --variable=libdir nabla)"
# ... and so does an rpath.
# shellcheck disable=SC2046
check "builds with -Wl,-rpath,\$(pkg-config --variable=libdir nabla)" \
  cc -std=c11 -Wall -Wextra -Werror "$tmp/prog.c" -o "$tmp/rpath" $(pkg-config --cflags --libs nabla) \
     -Wl,-rpath,"$(pkg-config --variable=libdir nabla)"
check "the rpath program runs" runs "$tmp" ./rpath
# Static: nabla-static.pc names libnabla.a; the program does not need
# libnabla.so at all.
# shellcheck disable=SC2046
check "builds with pkg-config --cflags --libs nabla-static" \
  cc -std=c11 -Wall -Wextra -Werror "$tmp/prog.c" -o "$tmp/static" $(pkg-config --cflags --libs nabla-static)
check "the static program does not need libnabla.so" bash -c "! readelf -d '$tmp/static' | grep -q libnabla"
mv "$prefix/lib/libnabla.so.0" "$tmp/hidden.so"
check "the static program runs with libnabla.so gone" runs "$tmp" ./static
mv "$tmp/hidden.so" "$prefix/lib/libnabla.so.0"
# pkg-config --static gives the static library's own dependencies.
static_libs=$(pkg-config --static --libs nabla)
check "pkg-config --static --libs nabla lists OpenBLAS, Graphviz, zlib, libm and pthread" \
  bash -c "for l in -lnabla -lopenblas -lgvc -lz -lm -pthread; do grep -qw -- \"\$l\" <<<'$static_libs' || { echo \"missing \$l in: $static_libs\"; exit 1; }; done"
check "pkg-config --libs nabla (shared) does not list them" \
  bash -c "! pkg-config --libs nabla | grep -qw -- -lgvc"

# A staged install (a package build): files under DESTDIR, no loader note.
make --no-print-directory BUILD="$build" install DESTDIR="$tmp/stage" PREFIX=/usr/local >"$tmp/stage.log" 2>&1
check "DESTDIR install stages the files and prints no loader note" \
  bash -c "test -f '$tmp/stage/usr/local/lib/libnabla.so.0' && test -f '$tmp/stage/usr/local/lib/pkgconfig/nabla-static.pc' && ! grep -q 'nabla:' '$tmp/stage.log'"
# Uninstall leaves nothing behind.
make --no-print-directory BUILD="$build" uninstall PREFIX="$prefix" >/dev/null 2>&1
check "make uninstall removes every installed file" bash -c "[ -z \"\$(find '$prefix' -type f -o -type l)\" ] || find '$prefix' -type f -o -type l"
echo "install: $pass passed, $fail failed"
[ "$fail" = 0 ]
