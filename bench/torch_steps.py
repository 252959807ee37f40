"""torch_steps.py — a small data-parallel PyTorch job (gloo) for bench/resilience.py's one-node comparison of
torchrun and `dtrain launch`: each step is a little compute and an all-reduce; every rank appends
"<rank> <restart> <realtime ns> step <n>" to --stamps after each step. On the first attempt rank
--crash-rank appends "... crash" at --crash-step and kills itself (SIGKILL), as a crashed rank would.

    torchrun --standalone --nproc-per-node 2 --max-restarts 1 bench/torch_steps.py --stamps F
    dtrain launch --nproc-per-node 2 --max-restarts 1 -- /usr/bin/python3 bench/torch_steps.py --stamps F
"""
import argparse
import os
import signal
import time

import torch
import torch.distributed as dist


def stamp(path, rank, restart, what):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%d %d %d %s\n" % (rank, restart, time.time_ns(), what)).encode())
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stamps", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--crash-rank", type=int, default=-1)
    ap.add_argument("--crash-step", type=int, default=50)
    a = ap.parse_args()
    dist.init_process_group("gloo", init_method="env://")
    rank = dist.get_rank()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    torch.manual_seed(rank)
    w = torch.randn(256, 256)
    for step in range(1, a.steps + 1):
        if restart == 0 and rank == a.crash_rank and step == a.crash_step:
            stamp(a.stamps, rank, restart, "crash %d" % step)
            os.kill(os.getpid(), signal.SIGKILL)
        g = w @ w.t()
        dist.all_reduce(g)
        w = torch.tanh(g / g.norm())
        stamp(a.stamps, rank, restart, "step %d" % step)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
