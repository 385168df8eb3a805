#!/usr/bin/env bash
# Checks that the Debian packages nabla needs are installed.  As root it
# installs the missing ones; otherwise it prints the exact apt-get line.
#   scripts/deps.sh build   what the library, examples and demo need
#   scripts/deps.sh test    that, plus the test framework, numpy, a word list and OpenMPI
#   scripts/deps.sh fuzz    that, plus clang and libFuzzer
#   scripts/deps.sh static  that, plus clang, cppcheck, clang-tidy and valgrind
#   scripts/deps.sh deb     that, plus OpenMPI and Debian's packaging tools (make deb)
set -u
what=${1:-build}

# package  how to tell it is there
checks=(
  "build-essential:command -v cc && command -v make"
  "pkg-config:command -v pkg-config"
  "libopenblas-dev:pkg-config --exists openblas"
  "uthash-dev:test -f /usr/include/uthash.h"
  "libgraphviz-dev:pkg-config --exists libgvc"
  "graphviz:command -v dot"
  "zlib1g-dev:pkg-config --exists zlib"
)
if [ "$what" = test ]; then
  # numpy: the safetensors test reads and writes files from Python with it;
  # wamerican: the word list examples/charlm learns from; OpenMPI: the
  # data-parallel library and its tests (libnabla_mpi)
  checks+=("libcmocka-dev:pkg-config --exists cmocka" "python3-numpy:/usr/bin/python3 -c 'import numpy'"
           "wamerican:test -r /usr/share/dict/words"
           "libopenmpi-dev:pkg-config --exists ompi-c" "openmpi-bin:command -v mpirun")
fi
if [ "$what" = deb ]; then
  checks+=("libopenmpi-dev:pkg-config --exists ompi-c" "dpkg-dev:command -v dpkg-buildpackage"
           "debhelper:command -v dh" "lintian:command -v lintian")
fi
if [ "$what" = static ]; then
  checks+=("clang:command -v clang" "cppcheck:command -v cppcheck" "clang-tidy:command -v clang-tidy"
           "valgrind:command -v valgrind")
fi
if [ "$what" = fuzz ]; then
  checks+=("clang:command -v clang" "libclang-rt-14-dev:ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a")
fi

missing=()
for c in "${checks[@]}"; do
  pkg=${c%%:*}
  if ! bash -c "${c#*:}" >/dev/null 2>&1; then missing+=("$pkg"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "nabla: installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "nabla: apt-get install failed for: ${missing[*]}" >&2; exit 1; }
  exit 0
fi
echo "nabla: missing packages: ${missing[*]}" >&2
echo "nabla: install them with:  sudo apt-get install ${missing[*]}" >&2
exit 1
