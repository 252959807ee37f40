#!/usr/bin/python3
"""PyTorch reference for a tensor-parallel split of dtrain's GPT: DUMP is the whole model's weights and
batch (written by rank 0 of `gpt_dump` under `dtrain launch` with WORLD_SIZE = tp), DUMP.rank0 ..
DUMP.rank{tp-1} each rank's gradients of its slice, its logits over its vocabulary slice and the loss.
Builds the whole model in torch (float64), runs forward + backward, and checks every rank against the
matching slices: rows r*n .. (r+1)*n of column-parallel weights and of wte, columns of row-parallel
weights, this rank's heads' rows in each of the q, k and v blocks of the fused qkv, whole tensors where
every rank holds them. Tolerances as gpt_torch_ref.py: loss 1e-5 relative, logits and each gradient
slice 1e-4 of the torch tensor's max |value| (1e-3 of the largest gradient for an all-~0 one).
usage: /usr/bin/python3 gpt_torch_tp.py DUMP"""
import struct
import sys

import numpy as np
import torch

from gpt_torch_ref import load_model, read_dump

TOL = 1e-4
WHOLE, ROWS, COLS, QKV = 0, 1, 2, 3


def read_rank(path, B, T, V):
    raw = open(path, "rb").read()
    if raw[:8] != b"DTRGPTP1":
        sys.exit(f"{path}: not a tensor-parallel gpt_dump file")
    tp, rank, n = struct.unpack_from("<3i", raw, 8)
    off = 20
    tensors = {}
    for _ in range(n):
        (nl,) = struct.unpack_from("<i", raw, off)
        name = raw[off + 4:off + 4 + nl].decode()
        off += 4 + nl
        (split,) = struct.unpack_from("<i", raw, off)
        shape = struct.unpack_from("<2q", raw, off + 4)
        gshape = struct.unpack_from("<2q", raw, off + 20)
        off += 36
        shp = [s for s in shape if s > 0]
        cnt = int(np.prod(shp))
        g = np.frombuffer(raw, dtype="<f4", count=cnt, offset=off).reshape(shp)
        off += 4 * cnt
        tensors[name] = (split, g)
    logits = np.frombuffer(raw, dtype="<f4", count=B * T * (V // tp), offset=off).reshape(B, T, V // tp)
    off += logits.nbytes
    (loss,) = struct.unpack_from("<f", raw, off)
    if off + 4 != len(raw):
        sys.exit(f"{path}: {len(raw) - off - 4} unexpected trailing bytes")
    return tp, rank, tensors, logits, loss


def slice_of(full, split, tp, r):
    if split == WHOLE:
        return full
    if split == ROWS:
        n = full.shape[0] // tp
        return full[r * n:(r + 1) * n]
    if split == COLS:
        n = full.shape[1] // tp
        return full[:, r * n:(r + 1) * n]
    block = full.shape[0] // 3
    n = block // tp
    return torch.cat([full[j * block + r * n:j * block + (r + 1) * n] for j in range(3)])


def main():
    d = read_dump(sys.argv[1])
    model, ps, names = load_model(d, torch.float64)
    B, T, V = d["B"], d["T"], d["V"]
    idx = torch.from_numpy(d["inputs"].astype(np.int64)).view(B, T)
    tg = torch.from_numpy(d["targets"].astype(np.int64)).view(B, T)
    logits, loss = model(idx, tg)
    loss.backward()
    grads = {n: p.grad.double() for n, p in zip(names, ps)}
    gmax = max(g.abs().max().item() for g in grads.values())
    failures, worst, checked, r = [], ("", 0.0), 0, 0
    tp = None
    while True:
        try:
            tp, rank, tensors, lg, l = read_rank(f"{sys.argv[1]}.rank{r}", B, T, V)
        except FileNotFoundError:
            break
        if abs(l - loss.item()) > 1e-5 * abs(loss.item()):
            failures.append(f"rank {rank}: loss {l:.7f}, torch {loss.item():.7f}")
        ref = logits.detach()[:, :, rank * (V // tp):(rank + 1) * (V // tp)]
        rel = ((torch.from_numpy(lg.copy()).double() - ref).abs().max() / logits.detach().abs().max()).item()
        if not rel <= TOL:
            failures.append(f"rank {rank}: logits of its vocabulary slice differ by {rel:.2e}")
        for name, (split, g) in tensors.items():
            refg = slice_of(grads[name], split, tp, rank)
            if tuple(refg.shape) != g.shape:
                failures.append(f"rank {rank}: {name} has shape {g.shape}, the slice {tuple(refg.shape)}")
                continue
            denom = max(grads[name].abs().max().item(), 1e-3 * gmax)
            e = (torch.from_numpy(g.copy()).double() - refg).abs().max().item() / denom
            checked += 1
            if e > worst[1]:
                worst = (f"rank {rank} {name}", e)
            if not e <= TOL:
                failures.append(f"rank {rank}: grad {name}: {e:.3e} of its max (> {TOL})")
        r += 1
    if r < 2:
        sys.exit(f"FAIL: found {r} rank files next to {sys.argv[1]}")
    print(f"tp {tp}: loss torch {loss.item():.7f}; {checked} gradient slices, worst {worst[0]} {worst[1]:.2e}")
    if failures:
        print("FAIL: " + "; ".join(failures[:6]))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
