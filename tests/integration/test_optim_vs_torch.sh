#!/usr/bin/env bash
# AdamW (decoupled decay with a decay mask), the warmup + cosine LR schedule and clipping by global norm
# against PyTorch: adamw_steps prints deterministic parameters and gradients and its results after every
# step; torch.optim.AdamW (two parameter groups: decay and none), torch.nn.utils.clip_grad_norm_ and the
# same schedule written in Python replay them. Each part is judged on its own (torch steps from dtrain's
# clipped gradients: AdamW amplifies a last-bit gradient difference where a parameter crosses zero):
# parameters within 1e-6 relative (values below 1e-3 in magnitude judged against 1e-3), clipped
# gradients and norms within 1e-6 relative, learning rates within 1e-12.
# ctest-labels: runtime torch
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
H=$BUILD/bin/adamw_steps
[ -x "$H" ] || fail "$H not built"
PY=/usr/bin/python3
$PY -c 'import torch' 2> /dev/null || fail "/usr/bin/python3 cannot import torch (scripts/install-deps.sh installs python3-torch)"

check() { # TAG adamw_steps-args...
  local tag=$1; shift
  "$H" "$@" > "$T/$tag.txt" || fail "adamw_steps $* exited $?"
  $PY - "$T/$tag.txt" << 'PYEOF' || fail "comparison with torch failed ($tag: adamw_steps $*)"
import math, sys
import torch
torch.set_num_threads(1)
hyper, mask, init, lrs, grads, norms, params, cgrads = None, {}, {}, {}, {}, {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "hyper": hyper = f[1:]
    elif f[0] == "mask": mask[int(f[1])] = int(f[2])
    elif f[0] == "init": init[int(f[1])] = float(f[2])
    elif f[0] == "lr": lrs[int(f[1])] = float(f[2])
    elif f[0] == "grad": grads.setdefault(int(f[1]), {})[int(f[2])] = float(f[3])
    elif f[0] == "norm": norms[int(f[1])] = float(f[2])
    elif f[0] == "cgrad": cgrads.setdefault(int(f[1]), {})[int(f[2])] = float(f[3])
    elif f[0] == "param": params.setdefault(int(f[1]), {})[int(f[2])] = float(f[3])
lr, min_lr, warmup, total, b1, b2, eps, wd, clip = (float(hyper[0]), float(hyper[1]), int(hyper[2]), int(hyper[3]),
    float(hyper[4]), float(hyper[5]), float(hyper[6]), float(hyper[7]), float(hyper[8]))
n, steps = len(init), len(lrs)
assert n > 0 and steps > 0 and len(params) == steps, "incomplete output"

def lr_at(s):  # the documented schedule: (s+1)/warmup of lr, then cosine to min_lr at total
    if warmup > 0 and s < warmup: return lr * (s + 1) / warmup
    if s >= total or total <= warmup: return min_lr
    return min_lr + 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) * (lr - min_lr)

dec = [i for i in range(n) if mask[i]]
nodec = [i for i in range(n) if not mask[i]]
assert dec and nodec
pd = torch.tensor([init[i] for i in dec], dtype=torch.float32, requires_grad=True)
pn = torch.tensor([init[i] for i in nodec], dtype=torch.float32, requires_grad=True)
opt = torch.optim.AdamW([{"params": [pd], "weight_decay": wd}, {"params": [pn], "weight_decay": 0.0}],
                        lr=lr, betas=(b1, b2), eps=eps)
bad = worst = 0
for s in range(steps):
    want_lr = lr_at(s)
    if abs(lrs[s] - want_lr) > 1e-12 * max(1.0, abs(want_lr)):
        print(f"step {s}: lr {lrs[s]!r}, python schedule {want_lr!r}"); bad += 1
    pd.grad = torch.tensor([grads[s][i] for i in dec], dtype=torch.float32)
    pn.grad = torch.tensor([grads[s][i] for i in nodec], dtype=torch.float32)
    tn = float(torch.nn.utils.clip_grad_norm_([pd, pn], clip)) if clip > 0 else 0.0
    if clip > 0 and abs(tn - norms[s]) > 1e-6 * abs(tn):
        print(f"step {s}: norm {norms[s]!r}, torch {tn!r}"); bad += 1
    tg = dict(zip(dec, pd.grad.tolist())); tg.update(zip(nodec, pn.grad.tolist()))
    for i in range(n):
        if abs(tg[i] - cgrads[s][i]) > 1e-6 * abs(tg[i]):
            if bad < 10: print(f"step {s} clipped grad {i}: dtrain {cgrads[s][i]!r} torch {tg[i]!r}")
            bad += 1
    pd.grad = torch.tensor([cgrads[s][i] for i in dec], dtype=torch.float32)
    pn.grad = torch.tensor([cgrads[s][i] for i in nodec], dtype=torch.float32)
    for g in opt.param_groups: g["lr"] = lrs[s]
    opt.step()
    got = dict(zip(dec, pd.detach().tolist())); got.update(zip(nodec, pn.detach().tolist()))
    for i in range(n):
        ref, mine = got[i], params[s][i]
        err = abs(mine - ref) / max(abs(ref), 1e-3)  # relative; values near zero judged against 1e-3
        worst = max(worst, err)
        if err > 1e-6:
            if bad < 10: print(f"step {s} param {i}: dtrain {mine!r} torch {ref!r} (error {err:.3g})")
            bad += 1
print(f"{n} params x {steps} steps: worst relative error {worst:.3g}, {bad} bad")
sys.exit(1 if bad else 0)
PYEOF
  echo "ok: $tag ($*)"
}

check default
check noclip --clip 0 --n 257 --steps 12
check tightclip --clip 0.05 --n 4099 --steps 30
echo "PASS"
