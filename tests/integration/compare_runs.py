#!/usr/bin/python3
"""Compare two training runs of dtrain (their run directories): the loss at every step (metrics.csv)
within a relative tolerance, and optionally the final weights (two safetensors files written by
`dtrain ckpt export`) within an absolute tolerance on every element of every model/ tensor. Prints the
largest differences; exits 1 when a tolerance is exceeded or the runs disagree on their steps.
   compare_runs.py RUN_A RUN_B --loss-tol 1e-4 [--weights A.safetensors B.safetensors --weight-tol 1e-3]"""
import argparse, csv, json, struct, sys

import numpy as np


def losses(run):
    with open(f"{run}/metrics.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in head.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        assert meta["dtype"] == "F32", (name, meta["dtype"])
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(meta["shape"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--loss-tol", type=float, required=True)
    ap.add_argument("--weights", nargs=2)
    ap.add_argument("--weight-tol", type=float, default=0.0)
    o = ap.parse_args()
    la, lb = losses(o.a), losses(o.b)
    if [s for s, _ in la] != [s for s, _ in lb] or not la:
        print(f"steps differ: {len(la)} against {len(lb)}")
        return 1
    worst, at = max((abs(x - y) / abs(x), s) for (s, x), (_, y) in zip(la, lb))
    name = lambda p: p.rstrip("/").split("/")[-1]
    ok = worst <= o.loss_tol
    line = f"{name(o.b)} vs {name(o.a)}: max relative loss difference {worst:.2e} at step {at} (tolerance {o.loss_tol:g})"
    if o.weights:
        wa, wb = safetensors(o.weights[0]), safetensors(o.weights[1])
        keys = sorted(k for k in wa if k.startswith("model/"))
        if keys != sorted(k for k in wb if k.startswith("model/")):
            print(line + "; the model tensors differ in name")
            return 1
        diff, which = max((float(np.max(np.abs(wa[k] - wb[k]))), k) for k in keys)
        ok = ok and diff <= o.weight_tol
        line += f"; final weights max |diff| {diff:.2e} in {which} (tolerance {o.weight_tol:g})"
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
