#!/usr/bin/env bash
# Run by `make install` after the libraries are copied: makes an installed
# libnabla.so.0 findable by the dynamic loader, or says what to do.
#   scripts/install-loader.sh DESTDIR LIBDIR
# - DESTDIR set (a staged install for a package): nothing; the package's
#   own scripts run ldconfig.
# - LIBDIR in the loader's search path (/usr/local/lib, /usr/lib, ...):
#   runs ldconfig when root, otherwise prints the line to run.
# - Any other prefix: prints how to link so the program finds the library
#   (an rpath) or how to run it (LD_LIBRARY_PATH).
set -u
destdir=$1
libdir=$2
[ -n "$destdir" ] && exit 0
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
want=$(realpath -m "$libdir")
in_path=no
while IFS= read -r dir; do
  [ "$(realpath -m "$dir")" = "$want" ] && in_path=yes
done < <("$ldconfig" -v -N -X 2>/dev/null | sed -n 's/^\(\/[^:]*\):.*/\1/p')
if [ "$in_path" = yes ]; then
  if [ "$(id -u)" = 0 ]; then
    "$ldconfig" && echo "nabla: ran ldconfig for $libdir"
  else
    echo "nabla: run 'sudo ldconfig' so that programs find $libdir/libnabla.so.0"
  fi
else
  echo "nabla: $libdir is not in the dynamic loader's path. Link programs with"
  echo "  -Wl,-rpath,$libdir  (or run them with LD_LIBRARY_PATH=$libdir),"
  echo "  or link the static library: pkg-config --cflags --libs nabla-static"
fi
