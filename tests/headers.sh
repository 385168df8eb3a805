#!/usr/bin/env bash
# The public headers compile on their own as C11 and C17 with -pedantic,
# and as C++11, C++17 and C++20 (a parameter named `requires` once broke
# C++20); a C++ program using the API (the README's model, NB_SHAPE, an op
# written with nabla_op.h) builds against the library in each C++ standard
# and gives the same loss as in C.  Prints "headers: N passed, M failed".
set -u
build=${1:-build}
cd "$(dirname "$0")/.."
passed=0; failed=0
warn="-pedantic -Wall -Wextra -Werror"
mpi_flags=""
if pkg-config --exists ompi-c 2>/dev/null; then
  mpi_flags=$(pkg-config --cflags ompi-c | sed 's/-I/-isystem /g')
fi
check() { # name, command...
  local name=$1; shift
  if out=$("$@" 2>&1); then passed=$((passed + 1)); else failed=$((failed + 1)); echo "headers: $name failed:"; echo "$out" | head -20; fi
}
for h in nabla.h nabla_nn.h nabla_train.h nabla_op.h nabla_kernel.h nabla_graph.h nabla_mpi.h; do
  if [ "$h" = nabla_mpi.h ] && [ -z "$mpi_flags" ]; then echo "headers: $h skipped (no OpenMPI)"; continue; fi
  for std in c11 c17; do
    check "$h as $std" sh -c "echo '#include <$h>' | cc -x c -std=$std $warn -Iinclude $mpi_flags -fsyntax-only -"
  done
  for std in c++11 c++17 c++20; do
    check "$h as $std" sh -c "echo '#include <$h>' | c++ -x c++ -std=$std $warn -Iinclude $mpi_flags -fsyntax-only -"
  done
done
for std in c++11 c++17 c++20; do # the C++ layer, with and without exceptions
  check "nabla.hpp as $std" sh -c "echo '#include <nabla.hpp>' | c++ -x c++ -std=$std $warn -Iinclude -fsyntax-only -"
  check "nabla.hpp as $std, no exceptions" sh -c "echo '#include <nabla.hpp>' | c++ -x c++ -std=$std -fno-exceptions $warn -Iinclude -fsyntax-only -"
done
libs="$(pkg-config --libs openblas libgvc zlib) -lm"
mkdir -p "$build/headers"
for std in c++11 c++17 c++20; do
  exe="$build/headers/model_$std"
  check "tests/cxx_model.cpp as $std" c++ -std=$std $warn -Iinclude tests/cxx_model.cpp -o "$exe" "$build/libnabla.a" $libs
  if [ -x "$exe" ]; then
    check "tests/cxx_model.cpp ($std) runs" "$exe"
  fi
done
echo "headers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
