#!/usr/bin/python3
"""torch_save.py -- the torch.save anchor for bench/ckpt_vs_anchors.sh.

Loads the tensors ckpt_perf --dump wrote (DIR/<name>.bin, raw little-endian bytes; the dtype is the
name's suffix: _bf16 or _f32), builds one state dict of them, and times torch.save of it to a file
(then fsync, as dtrain's shards are fsynced) and torch.load back. torch.save stores the bytes as they
are, so its ratio is ~1.0: the anchor for throughput and on-disk size. Prints one line per measurement
(`torch.save bytes=... stored=... ratio=... save_s=... save_gbps=... cpu_gbps=... load_s=...`).
Uses Debian's python3-torch: run it with /usr/bin/python3.

    /usr/bin/python3 bench/torch_save.py DIR [--out FILE] [--reps 3]
"""
import argparse
import os
import sys
import time

import torch

DTYPES = {"_bf16": torch.bfloat16, "_f32": torch.float32}


def load_state(d):
    state = {}
    for name in sorted(os.listdir(d)):
        if not name.endswith(".bin"):
            continue
        stem = name[:-4]
        dtype = next((t for suffix, t in DTYPES.items() if stem.endswith(suffix)), None)
        if dtype is None:
            continue
        with open(os.path.join(d, name), "rb") as f:
            raw = bytearray(f.read())
        state[stem] = torch.frombuffer(raw, dtype=dtype).clone()
    return state


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--out", default=None, help="file to save to (default DIR/torch_state.pt)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    state = load_state(a.dir)
    if not state:
        print(f"torch_save.py: no *_bf16.bin / *_f32.bin tensors in {a.dir}", file=sys.stderr)
        return 2
    raw = sum(t.numel() * t.element_size() for t in state.values())
    out = a.out or os.path.join(a.dir, "torch_state.pt")
    best_wall = best_cpu = best_load = float("inf")
    for _ in range(a.reps):
        if os.path.exists(out):
            os.unlink(out)
        w0, c0 = time.perf_counter(), time.process_time()
        with open(out, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        w1, c1 = time.perf_counter(), time.process_time()
        best_wall, best_cpu = min(best_wall, w1 - w0), min(best_cpu, c1 - c0)
        l0 = time.perf_counter()
        back = torch.load(out)
        best_load = min(best_load, time.perf_counter() - l0)
        for k, v in state.items():
            if not torch.equal(back[k].view(torch.uint8), v.view(torch.uint8)):
                print(f"torch_save.py: {k} did not round-trip", file=sys.stderr)
                return 1
    stored = os.path.getsize(out)
    os.unlink(out)
    print(f"torch.save tensors={len(state)} bytes={raw} stored={stored} ratio={raw / stored:.3f} "
          f"save_s={best_wall:.4f} save_gbps={raw / best_wall / 1e9:.3f} cpu_gbps={raw / max(best_cpu, 1e-9) / 1e9:.3f} "
          f"load_s={best_load:.4f} load_gbps={raw / best_load / 1e9:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
