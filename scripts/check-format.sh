#!/usr/bin/env bash
# Every C/CUDA source and header of the project is as clang-format (.clang-format at the root) writes it:
# exits 1 listing the files that are not, with the first differences. `clang-format -i FILE` fixes one.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format > /dev/null || { echo "check-format: clang-format is not installed (scripts/install-deps.sh)"; exit 2; }
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh' | grep -v '^tests/fuzz/corpus')
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" > /dev/null 2>&1; then
    echo "check-format: $f is not clang-formatted:"
    clang-format "$f" | diff "$f" - | head -8 || true
    bad=$((bad + 1))
  fi
done
echo "check-format: ${#files[@]} files, $bad not formatted"
[ "$bad" = 0 ]
