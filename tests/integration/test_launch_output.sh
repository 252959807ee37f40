#!/usr/bin/env bash
# 4 ranks printing many long lines at once: every console line is one whole line of one rank, with
# its [0:R] prefix and its exact payload, none lost, none mixed (also for lines longer than PIPE_BUF
# and for lines printed without a final newline).
# ctest-labels: launch
# ctest-timeout: 120
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

check() { # file nranks nlines len
  /usr/bin/python3 - "$@" <<'PY' || exit 1
import re, sys
path, nranks, nlines, ln = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
seen = {r: 0 for r in range(nranks)}
pat = re.compile(r'^\[0:(\d+)\] r(\d+)-l(\d+):([a-z]*)$')
with open(path, 'rb') as f:
    for no, raw in enumerate(f, 1):
        line = raw.decode('ascii', 'replace').rstrip('\n')
        m = pat.match(line)
        if not m:
            sys.exit(f"FAIL: line {no} is not one whole worker line: {line[:120]!r}")
        r, r2, i = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if r != r2 or r >= nranks:
            sys.exit(f"FAIL: line {no}: prefix rank {r} but payload of rank {r2}")
        if i != seen[r]:
            sys.exit(f"FAIL: rank {r}: line {i} where {seen[r]} was expected (lost or reordered)")
        head = f"r{r}-l{i}:"
        want = ''.join(chr(ord('a') + (r + i + k) % 26) for k in range(len(head), ln))
        if m.group(4) != want:
            sys.exit(f"FAIL: rank {r} line {i}: payload differs")
        seen[r] += 1
for r, n in seen.items():
    if n != nlines:
        sys.exit(f"FAIL: rank {r} printed {n} lines, expected {nlines}")
PY
}

timeout 60 "$DTRAIN" launch --nproc-per-node 4 -- "$W" lines 3000 1000 > "$T/a" 2> "$T/a.err" \
  || fail "launch exit $?: $(tail -3 "$T/a.err")"
check "$T/a" 4 3000 1000
timeout 60 "$DTRAIN" launch --nproc-per-node 4 -- "$W" lines 300 20000 > "$T/b" 2> "$T/b.err" \
  || fail "launch exit $?: $(tail -3 "$T/b.err")"
check "$T/b" 4 300 20000

# a last line without a newline is still printed, as a whole line; stderr is prefixed too
timeout 30 "$DTRAIN" launch --nproc-per-node 2 -- /bin/sh -c 'printf "tail-$RANK"; echo "err-$RANK" >&2' \
  > "$T/c" 2> "$T/c.err" || fail "launch exit $?"
[ "$(sort "$T/c")" = "$(printf '[0:0] tail-0\n[0:1] tail-1')" ] || fail "partial lines: $(cat "$T/c")"
grep -q '^\[0:0\] err-0$' "$T/c.err" && grep -q '^\[0:1\] err-1$' "$T/c.err" || fail "stderr lines: $(cat "$T/c.err")"
# --log-dir with --redirects 3 --tee 2: both streams in the files, only stderr on the console
timeout 30 "$DTRAIN" launch --nproc-per-node 2 --rdzv-id rt --log-dir "$T/logs" --redirects 3 --tee 2 -- /bin/sh -c \
  'echo "out-$RANK"; echo "err-$RANK" >&2' > "$T/d" 2> "$T/d.err" || fail "redirect run exit $?"
grep -q '^\[0:' "$T/d" && fail "--redirects 3 --tee 2 still printed stdout: $(cat "$T/d")"
grep -q '^\[0:1\] err-1$' "$T/d.err" || fail "--tee 2 lost stderr: $(cat "$T/d.err")"
for r in 0 1; do
  [ "$(cat "$T/logs/rt/attempt_0/rank_$r.stdout")" = "out-$r" ] || fail "rank $r stdout file"
  [ "$(cat "$T/logs/rt/attempt_0/rank_$r.stderr")" = "err-$r" ] || fail "rank $r stderr file"
done
echo "PASS"
