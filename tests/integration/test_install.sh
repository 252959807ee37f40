#!/usr/bin/env bash
# `cmake --install` puts bin/dtrain, lib/libdtrain, include/dtrain, the CMake package and the pkg-config
# file in a prefix; a program outside the tree then builds against it both ways and runs.
# ctest-timeout: 240
# ctest-labels: install
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$DTRAIN_BUILD" --prefix "$prefix" >"$tmp/install.log"
for f in bin/dtrain include/dtrain/store.h include/dtrain/common.h lib/libdtrain.so \
         lib/cmake/dtrain/dtrainConfig.cmake lib/pkgconfig/dtrain.pc; do
  [ -e "$prefix/$f" ] || { echo "FAIL: install did not create $f"; exit 1; }
done
"$prefix/bin/dtrain" --version | grep -q '^dtrain 0\.1\.0' || { echo "FAIL: installed dtrain --version"; exit 1; }

# find_package(dtrain): CMake links with the library's directory as RUNPATH, so it runs as built
cmake -S "$DTRAIN_SRC/tests/integration/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cfg.log"
cmake --build "$tmp/consumer" >"$tmp/build.log"
env -u LD_LIBRARY_PATH "$tmp/consumer/consumer"

# pkg-config: with the rpath variable the program runs as built; without it, only with LD_LIBRARY_PATH
# (what dtrain.pc's comment says)
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
src=$DTRAIN_SRC/tests/integration/consumer/consumer.c
cc -o "$tmp/consumer_pc" "$src" $(pkg-config --cflags --libs dtrain) $(pkg-config --variable=rpath dtrain)
env -u LD_LIBRARY_PATH "$tmp/consumer_pc"
cc -o "$tmp/consumer_norpath" "$src" $(pkg-config --cflags --libs dtrain)
if env -u LD_LIBRARY_PATH "$tmp/consumer_norpath" > "$tmp/norpath.log" 2>&1; then
  echo "FAIL: a program linked without the rpath found libdtrain anyway: the rpath check proves nothing"; exit 1
fi
grep -q "libdtrain.so.0: cannot open shared object file" "$tmp/norpath.log" \
  || { echo "FAIL: without the rpath: $(cat "$tmp/norpath.log")"; exit 1; }
LD_LIBRARY_PATH=$(pkg-config --variable=libdir dtrain) "$tmp/consumer_norpath"
grep -q -- '--variable=rpath' "$prefix/lib/pkgconfig/dtrain.pc" || { echo "FAIL: dtrain.pc does not say how"; exit 1; }
echo "PASS: installed tree works through find_package and pkg-config"
