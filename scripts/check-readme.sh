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
if ! { out=$(cd "$dir" && ./model) && echo "$out" && [ -s "$dir/model.dot" ] &&
       awk '/loss/ {l[n++] = $4} END {exit !(n >= 2 && l[n-1] < l[0])}' <<<"$out"; }; then
  echo "readme: 0 passed, 1 failed"; exit 1
fi
# The in-tree build line, as the README gives it, must link a program that
# uses the toolkit's files too (parameter files and IDX need zlib).
line=$(grep -o 'cc -Iinclude model.c build/libnabla.a[^`]*' README.md | head -n 1)
cat > "$dir/toolkit.c" <<'EOF2'
#include <nabla_train.h>
#include <stdio.h>
int main(void) {
    nb_params *ps = nb_params_new();
    nb_params_add(ps, "w", nb_ones(NULL, NB_F32, NB_SHAPE(2)));
    nb_status st = nb_params_save(ps, "toolkit.nbp");
    nb_tensor *t = nb_idx_read("no-such-file.idx.gz", NB_F32, 1);
    nb_params_free(ps);
    printf("saved: %s; missing IDX: %s\n", nb_status_string(st), nb_status_string(nb_tensor_status(t)));
    return st != NB_OK;
}
EOF2
cmd=${line//model.c/$dir/model.c $dir/toolkit.c}
cmd=${cmd//build\/libnabla.a/$build/libnabla.a}
cmd=${cmd//-o model/-o $dir/intree}
sed -i 's/^int main(void) {$/static int readme_main(void) {/' "$dir/model.c"
printf 'int model_main(void) { return readme_main(); }\n' >> "$dir/model.c"
sed -i 's/^int main(void) {$/int model_main(void);\nint main(void) {\n    if (model_main()) return 1;/' "$dir/toolkit.c"
if [ -n "$line" ] && eval "$cmd" && (cd "$dir" && ./intree >/dev/null); then
  echo "readme: 2 passed, 0 failed"
else
  echo "readme: the in-tree build line failed: ${line:-not found in README.md}"
  echo "readme: 1 passed, 1 failed"; exit 1
fi
