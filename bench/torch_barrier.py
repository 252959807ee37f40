"""torch_barrier.py — the torchrun side of bench/launch_vs_anchors.sh: an unmodified-style PyTorch worker.

    torchrun --standalone --nproc-per-node 4 bench/torch_barrier.py
        gloo init_process_group(env://), one barrier, exit 0 (start-to-finish anchor).
    torchrun ... --max-restarts 1 bench/torch_barrier.py --stamps FILE --crash-rank R
        after the barrier every rank appends "<rank> <restart> <realtime ns> passed" to FILE; on the
        first attempt rank R instead appends "... crash" and exits 3 (restart-latency anchor, measured
        the same way as launch_perf's dtrain restart worker).
"""
import argparse
import os
import sys
import time

import torch.distributed as dist


def stamp(path, rank, restart, what):
    line = "%d %d %d %s\n" % (rank, restart, time.time_ns(), what)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stamps")
    ap.add_argument("--crash-rank", type=int, default=-1)
    args = ap.parse_args()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", os.environ.get("DTRAIN_RESTART_COUNT", "0")))
    dist.init_process_group("gloo", init_method="env://")
    rank = dist.get_rank()
    dist.barrier()
    if args.stamps:
        if restart == 0 and rank == args.crash_rank:
            stamp(args.stamps, rank, restart, "crash")
            os._exit(3)
        stamp(args.stamps, rank, restart, "passed")
        if restart == 0:
            time.sleep(120)  # the agent stops us once the crash is seen
            return 1
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
