#!/usr/bin/env bash
# No call loop among the files of checkpoint/: which file calls a function (or uses a variable) defined
# in which other file, read with nm from this build's object files (defined: any global type; used: U),
# must be a graph without cycles. A failure prints every cycle as a chain of files, with the symbols
# that make each link, so the call that closed it is easy to find. Run by hand:
#   DTRAIN_SRC=. DTRAIN_BUILD=build bash tests/integration/test_ckpt_layering.sh
# ctest-labels: ckpt unit
# ctest-timeout: 60
set -euo pipefail
SRC=${DTRAIN_SRC:?set by ctest}
BUILD=${DTRAIN_BUILD:?set by ctest}
fail() {
  echo "FAIL: $*"
  exit 1
}
command -v nm >/dev/null || fail "nm (binutils) is not installed"

# Read "FROM TO SYMBOL" lines (one per use of SYMBOL in FROM that TO defines); print the links, then
# every elementary cycle as "CYCLE a -> b -> a   [a -> b: sym, ...; b -> a: sym]".
cycles() {
  awk '
    { k = $1 SUBSEP $2
      if (!(k in syms)) { syms[k] = $3; nsym[k] = 1; out[$1] = out[$1] " " $2 } else if (nsym[k]++ < 3) syms[k] = syms[k] ", " $3
      node[$1] = 1; node[$2] = 1 }
    function link(a, b,   k) { k = a SUBSEP b; return a " -> " b ": " syms[k] (nsym[k] > 3 ? ", ..." : "") }
    # Every cycle whose smallest node is start: depth-first along nodes greater than start.
    function walk(v, depth,   i, n, next_, w, line, j) {
      path[depth] = v; on[v] = 1
      n = split(out[v], next_, " ")
      for (i = 1; i <= n; i++) {
        w = next_[i]
        if (w == start) {
          line = "CYCLE"; for (j = 0; j <= depth; j++) line = line " " path[j] " ->"
          line = line " " start "   ["
          for (j = 0; j < depth; j++) line = line link(path[j], path[j + 1]) "; "
          print line link(v, start) "]"
          found++
        } else if (w > start && !on[w]) walk(w, depth + 1)
      }
      on[v] = 0
    }
    END {
      for (k in syms) { split(k, ab, SUBSEP); print "LINK " link(ab[1], ab[2]) }
      for (s in node) { start = s; walk(s, 0) }
    }'
}

# The finder itself must see a planted cycle (and only it), or a pass below would mean nothing.
planted=$(printf 'a.c b.c f\nb.c c.c g\nc.c a.c h\nc.c d.c i\n' | cycles | grep '^CYCLE' || true)
[ "$planted" = "CYCLE a.c -> b.c -> c.c -> a.c   [a.c -> b.c: f; b.c -> c.c: g; c.c -> a.c: h]" ] ||
  fail "the cycle finder missed a planted cycle a.c -> b.c -> c.c -> a.c; it printed: '$planted'"

# The objects of this build's checkpoint/*.c: the first CMake target directory that holds all of them
# (objects of sources since removed may linger in a build tree; only the present sources count).
sources=()
for c in "$SRC"/checkpoint/*.c; do sources+=("$(basename "$c")"); done
[ ${#sources[@]} -gt 0 ] || fail "no sources in $SRC/checkpoint"
objdir=
for d in "$BUILD"/CMakeFiles/*.dir/checkpoint; do
  [ -d "$d" ] || continue
  all=1
  for s in "${sources[@]}"; do [ -f "$d/$s.o" ] || all=0; done
  if [ $all = 1 ]; then
    objdir=$d
    break
  fi
done
[ -n "$objdir" ] || fail "no target under $BUILD/CMakeFiles has an object of every checkpoint/*.c (${sources[*]}); build first"

edges=$(
  for s in "${sources[@]}"; do
    nm -P "$objdir/$s.o" | awk -v f="$s" '$2 == "U" { print "U", f, $1; next } $2 ~ /^[A-TV-Z]$/ { print "D", f, $1 }'
  done | awk '$1 == "D" { def[$3] = $2; next } { use[n++] = $2 " " $3 }
              END { for (i = 0; i < n; i++) { split(use[i], u, " "); if ((u[2] in def) && def[u[2]] != u[1]) print u[1], def[u[2]], u[2] } }' |
    sort
)
report=$(printf '%s\n' "$edges" | cycles | sort)
echo "checkpoint/ call graph ($objdir):"
printf '%s\n' "$report" | sed -n 's/^LINK /  /p'
# A sanity check that nm was read: the writer calls the shard writer.
printf '%s\n' "$edges" | grep -q '^ckpt_save\.c shard_write\.c ' ||
  fail "no link ckpt_save.c -> shard_write.c found: nm's output was not understood"
if printf '%s\n' "$report" | grep -q '^CYCLE'; then
  echo "call loops among the files of checkpoint/ (a file that calls another must not be called back by it,"
  echo "directly or through others; move the shared piece into a file both can call):"
  printf '%s\n' "$report" | sed -n 's/^CYCLE /  /p'
  fail "$(printf '%s\n' "$report" | grep -c '^CYCLE') call loop(s) among the files of checkpoint/"
fi
echo "OK: no call loop among the ${#sources[@]} files of checkpoint/"
