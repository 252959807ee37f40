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

# find_package(dtrain)
cmake -S "$DTRAIN_SRC/tests/integration/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cfg.log"
cmake --build "$tmp/consumer" >"$tmp/build.log"
LD_LIBRARY_PATH="$prefix/lib" "$tmp/consumer/consumer"

# pkg-config
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -o "$tmp/consumer_pc" "$DTRAIN_SRC/tests/integration/consumer/consumer.c" $(pkg-config --cflags --libs dtrain)
LD_LIBRARY_PATH="$prefix/lib" "$tmp/consumer_pc"
echo "PASS: installed tree works through find_package and pkg-config"
