#!/usr/bin/python3
"""PyTorch reference for dtrain's GPT (runtime/gpt.h): reads a dump written by tests/helpers/gpt_dump,
builds the same model in torch (same parameter order and names), runs forward + backward on the same
inputs and targets in float64, and compares loss, logits and every gradient tensor with dtrain's fp32
results. Fails (exit 1) naming the worst tensor when a difference exceeds the tolerance:
  loss: |diff| <= 1e-5 * |loss|;  logits, each gradient tensor: max|diff| <= 1e-4 * max|reference|
  (a gradient tensor whose reference is all ~0 is compared against 1e-4 * the largest gradient).
usage: /usr/bin/python3 gpt_torch_ref.py DUMP [--fp32]"""
import math
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TOL = 1e-4


class Block(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.nh = nh
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def params_in_order(self):
        return [self.ln1.weight, self.ln1.bias, self.qkv.weight, self.qkv.bias, self.attn_proj.weight,
                self.attn_proj.bias, self.ln2.weight, self.ln2.bias, self.fc.weight, self.fc.bias,
                self.mlp_proj.weight, self.mlp_proj.bias]

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.nh
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.nh, hs).transpose(1, 2)
        k = k.view(B, T, self.nh, hs).transpose(1, 2)
        v = v.view(B, T, self.nh, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, block, L, nh, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(block, C)
        self.h = nn.ModuleList([Block(C, nh) for _ in range(L)])
        self.lnf = nn.LayerNorm(C, eps=1e-5)

    def params_in_order(self):
        ps = [self.wte.weight, self.wpe.weight]
        for b in self.h:
            ps += b.params_in_order()
        return ps + [self.lnf.weight, self.lnf.bias]

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight.t()  # tied output head
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def param_names(L):
    names = ["wte", "wpe"]
    for l in range(L):
        names += [f"h.{l}.{s}" for s in ("ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w",
                                          "attn.proj.b", "ln2.w", "ln2.b", "mlp.fc.w", "mlp.fc.b",
                                          "mlp.proj.w", "mlp.proj.b")]
    return names + ["lnf.w", "lnf.b"]


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


def main():
    path = sys.argv[1]
    dtype = torch.float32 if "--fp32" in sys.argv[2:] else torch.float64
    torch.manual_seed(0)
    d = read_dump(path)
    model = GPT(d["V"], d["block"], d["L"], d["nh"], d["C"])
    ps = model.params_in_order()
    names = param_names(d["L"])
    total = sum(p.numel() for p in ps)
    if total != d["n"]:
        sys.exit(f"FAIL: parameter count {total} in torch vs {d['n']} in the dump")
    flat = torch.from_numpy(d["params"].copy())
    off = 0
    with torch.no_grad():
        for p in ps:
            p.copy_(flat[off:off + p.numel()].view_as(p))
            off += p.numel()
    model = model.to(dtype)
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
