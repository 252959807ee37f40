"""gloo_allreduce.py — the Gloo anchor of bench/coll_vs_anchors.sh: torch.distributed all-reduce (f32 sum)
timed like coll_perf (warm-up, barrier, mean per iteration, slowest rank), run as every rank under
`dtrain launch` (Debian's python3-torch: use /usr/bin/python3):

    build/bin/dtrain launch --nproc-per-node 4 -- /usr/bin/python3 bench/gloo_allreduce.py \
        --sizes 16M,64M,256M --iters 5 --warmup 1 --json out.json

Rank 0 prints coll_perf-style rows (size count type redop time(us) algbw(GB/s) busbw(GB/s) #wrong, with
busbw = algbw x 2(n-1)/n) and writes the same JSON layout as coll_perf --json. Each size is checked once:
every rank contributes rank+1, so every element must equal n(n+1)/2 (#wrong counts the others).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist


def parse_bytes(s):
    s = s.strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="16M,64M,256M", help="comma-separated byte sizes (K/M/G suffixes)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://")
    rank, n = dist.get_rank(), dist.get_world_size()
    rows = []
    if rank == 0:
        print("# gloo_allreduce: torch %s, %d ranks, f32 sum, iters %d, warmup %d" % (torch.__version__, n, args.iters, args.warmup))
        print("%12s %12s %6s %6s %12s %12s %12s %7s" % ("size", "count", "type", "redop", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong"))
        sys.stdout.flush()
    for size in (parse_bytes(s) for s in args.sizes.split(",")):
        count = size // 4
        t = torch.ones(count, dtype=torch.float32)
        for _ in range(args.warmup):
            dist.all_reduce(t)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(t)
        per = torch.tensor([(time.perf_counter() - t0) / args.iters], dtype=torch.float64)
        dist.all_reduce(per, op=dist.ReduceOp.MAX)
        t.fill_(rank + 1)
        dist.all_reduce(t)
        wrong = torch.tensor([int((t != n * (n + 1) / 2).sum())], dtype=torch.int64)
        dist.all_reduce(wrong)
        per = float(per[0])
        algbw = count * 4 / per / 1e9
        busbw = algbw * 2 * (n - 1) / n
        rows.append({"size": count * 4, "count": count, "iters": args.iters, "time_us": per * 1e6, "algbw": algbw,
                     "busbw": busbw, "wrong": int(wrong[0])})
        if rank == 0:
            print("%12d %12d %6s %6s %12.2f %12.3f %12.3f %7d" % (count * 4, count, "f32", "sum", per * 1e6, algbw, busbw, int(wrong[0])))
            sys.stdout.flush()
        del t
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": "gloo_allreduce", "op": "allreduce", "backend": "gloo", "nranks": n, "dtype": "f32",
                       "redop": "sum", "results": rows, "max_busbw": max(r["busbw"] for r in rows),
                       "wrong": sum(r["wrong"] for r in rows)}, f)
    dist.destroy_process_group()
    return 1 if any(r["wrong"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
