#!/usr/bin/env bash
# The default recipe end to end, as a user runs it: `dtrain run recipes/gpt-tiny.yaml` (4 DP ranks,
# 3-digit addition) finishes, its loss falls from ~ln(14) to below 0.05 and held-out exact-match accuracy
# reaches 95%; it leaves metrics.csv, loss.png, summary.txt and checkpoints (keep 2: steps 1000 and 1500).
# The 2-minute budget is checked loosely (300 s) because this machine is shared; the wall time is
# printed. Label `slow`: about 20 s idle, up to a minute on a busy machine.
# ctest-labels: train slow
# ctest-timeout: 600
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

start=$(date +%s)
timeout 500 "$DTRAIN" run "$SRC/recipes/gpt-tiny.yaml" job.run_dir="$T/run" > "$T/out" 2> "$T/err" \
  || fail "gpt-tiny exit $?: $(tail -20 "$T/err")"
wall=$(( $(date +%s) - start ))
grep '^\[0:0\] done:' "$T/out" || fail "no summary line: $(tail "$T/out")"
echo "wall time ${wall}s"
[ "$wall" -le 300 ] || fail "gpt-tiny took ${wall}s (budget 120 s, checked at 300 s on a shared machine)"
for f in metrics.csv loss.png summary.txt checkpoints/latest; do [ -s "$T/run/$f" ] || fail "no $f"; done
[ "$(cat "$T/run/checkpoints/latest")" = 1500 ] || fail "latest checkpoint: $(cat "$T/run/checkpoints/latest")"
[ -d "$T/run/checkpoints/step_00001000" ] && [ -d "$T/run/checkpoints/step_00001500" ] || fail "checkpoints: $(ls "$T/run/checkpoints")"
[ -d "$T/run/checkpoints/step_00000500" ] && fail "keep 2 should have removed step 500"
/usr/bin/python3 - "$T/run/summary.txt" <<'PY' || fail "gpt-tiny did not learn: $(cat "$T/run/summary.txt")"
import sys
s = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
first, final, acc = float(s["first_loss"]), float(s["final_loss"]), float(s["accuracy"])
print(f"loss {first:.4f} -> {final:.4f}, accuracy {100 * acc:.1f}%, {float(s['tokens_per_s']):.0f} tok/s")
assert 2.4 < first < 2.9, first
assert final < 0.05, final
assert acc >= 0.95, acc
PY
echo PASS
