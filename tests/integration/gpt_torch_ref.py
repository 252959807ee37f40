#!/usr/bin/python3
"""PyTorch reference for dtrain's GPT (runtime/model/gpt.h): reads a dump written by tests/helpers/gpt_dump,
builds the same model in torch (same parameter order and names), runs forward + backward on the same
inputs and targets in float64, and compares loss, logits and every gradient tensor with dtrain's fp32
results. Fails (exit 1) naming the worst tensor when a difference exceeds the tolerance:
  loss: |diff| <= 1e-5 * |loss|;  logits, each gradient tensor: max|diff| <= 1e-4 * max|reference|
  (a gradient tensor whose reference is all ~0 is compared against 1e-4 * the largest gradient).
usage: /usr/bin/python3 gpt_torch_ref.py DUMP [--fp32]"""
import struct
import sys

import numpy as np
import torch

from gpt_torch_model import GPT, param_names

TOL = 1e-4


def read_dump(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"DTRGPTD1":
        sys.exit(f"{path}: not a gpt_dump file (magic {raw[:8]!r})")
    V, block, L, nh, C, B, T = struct.unpack_from("<7i", raw, 8)
    (n,) = struct.unpack_from("<q", raw, 36)
    off = 44

    def take(dtype, count):
        nonlocal off
        a = np.frombuffer(raw, dtype=dtype, count=count, offset=off)
        off += a.nbytes
        return a

    d = dict(V=V, block=block, L=L, nh=nh, C=C, B=B, T=T, n=n)
    d["params"] = take("<f4", n)
    d["inputs"] = take("<i4", B * T)
    d["targets"] = take("<i4", B * T)
    d["loss"] = float(take("<f4", 1)[0])
    d["logits"] = take("<f4", B * T * V)
    d["grads"] = take("<f4", n)
    if off != len(raw):
        sys.exit(f"{path}: {len(raw) - off} unexpected trailing bytes")
    return d


def load_model(d, dtype):
    """The dump's model in torch: (model, its parameters in dtrain's order, their names)."""
    model = GPT(d["V"], d["block"], d["L"], d["nh"], d["C"])
    ps = model.params_in_order()
    total = sum(p.numel() for p in ps)
    if total != d["n"]:
        sys.exit(f"FAIL: parameter count {total} in torch vs {d['n']} in the dump")
    flat = torch.from_numpy(d["params"].copy())
    off = 0
    with torch.no_grad():
        for p in ps:
            p.copy_(flat[off:off + p.numel()].view_as(p))
            off += p.numel()
    return model.to(dtype), ps, param_names(d["L"])


def main():
    path = sys.argv[1]
    dtype = torch.float32 if "--fp32" in sys.argv[2:] else torch.float64
    torch.manual_seed(0)
    d = read_dump(path)
    model, ps, names = load_model(d, dtype)
    B, T, V = d["B"], d["T"], d["V"]
    idx = torch.from_numpy(d["inputs"].astype(np.int64)).view(B, T)
    tg = torch.from_numpy(d["targets"].astype(np.int64)).view(B, T)
    logits, loss = model(idx, tg)
    loss.backward()

    failures = []
    ref_loss = loss.item()
    dl = abs(ref_loss - d["loss"])
    print(f"loss: dtrain {d['loss']:.7f} torch {ref_loss:.7f} |diff| {dl:.2e}")
    if not dl <= 1e-5 * abs(ref_loss):
        failures.append(f"loss differs by {dl:.3e} (> 1e-5 * |loss|)")

    ours = torch.from_numpy(d["logits"].copy()).double().view(B, T, V)
    ref = logits.detach().double()
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    print(f"logits: max|diff|/max|ref| {rel:.2e}")
    if not rel <= TOL:
        failures.append(f"logits differ: {rel:.3e} > {TOL}")

    g = torch.from_numpy(d["grads"].copy()).double()
    gmax = max(p.grad.abs().max().item() for p in ps)
    worst, off = ("", 0.0), 0
    for name, p in zip(names, ps):
        mine = g[off:off + p.numel()].view_as(p)
        off += p.numel()
        refg = p.grad.double()
        denom = max(refg.abs().max().item(), 1e-3 * gmax)
        r = ((mine - refg).abs().max().item()) / denom
        if r > worst[1]:
            worst = (name, r)
        if not r <= TOL:
            failures.append(f"grad {name}: max|diff| {r:.3e} of its max |grad| (> {TOL})")
    print(f"grads: {len(ps)} tensors, worst {worst[0]} {worst[1]:.2e} (tolerance {TOL})")
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
