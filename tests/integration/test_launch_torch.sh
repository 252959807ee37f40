#!/usr/bin/env bash
# An unmodified PyTorch script (gloo, init_method="env://") under `dtrain launch` on one node: the
# all_reduce sum is right on every rank, also after a restart. Debian's python3-torch lives under
# /usr/bin/python3 (the python3 on PATH may be another interpreter without torch).
# ctest-labels: launch torch
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
PY=/usr/bin/python3
$PY -c 'import torch.distributed' 2>/dev/null || fail "$PY cannot import torch.distributed (run scripts/install-deps.sh)"

timeout 120 "$DTRAIN" launch --nproc-per-node 2 -- $PY "$SRC/tests/integration/torch_allreduce.py" \
  > "$T/out" 2> "$T/err" || fail "exit $?: $(tail -20 "$T/err")"
for r in 0 1; do
  grep -q "^\[0:$r\] rank $r/2 all_reduce ok sum=3 restart=0$" "$T/out" || fail "rank $r: $(cat "$T/out")"
done

# torchrun's spelling, the .py program run through DTRAIN_PYTHON, and a restart after rank 1 dies
cat > "$T/flaky.py" <<'PY'
import os, runpy, sys
if os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
    sys.exit(3)
runpy.run_path(sys.argv[1], run_name="__main__")
PY
DTRAIN_PYTHON=$PY timeout 120 "$DTRAIN" launch --nproc_per_node=2 --max_restarts=1 "$T/flaky.py" \
  "$SRC/tests/integration/torch_allreduce.py" > "$T/out2" 2> "$T/err2" || fail "restart run exit $?: $(tail -20 "$T/err2")"
for r in 0 1; do
  grep -q "^\[0:$r\] rank $r/2 all_reduce ok sum=3 restart=1$" "$T/out2" || fail "after restart, rank $r: $(cat "$T/out2")"
done
echo "PASS"
