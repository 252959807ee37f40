"""torch_allreduce_mn.py — an ordinary PyTorch gloo program, nothing dtrain-specific, run by
test_multinode_torch.sh under `dtrain launch` on namespace nodes. Every rank all-reduces a tensor whose
exact sum is known, all-gathers (RANK, GROUP_RANK) so the test can see both nodes took part, and prints one
`TORCH_ALLREDUCE ...` line. Exit 0 only when the result matches the closed form exactly.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist


def main():
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    env_rank, env_world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    group_rank = int(os.environ["GROUP_RANK"])

    # Integers in float64: the sum is exact, so the comparison needs no tolerance.
    n = 1000
    t = torch.arange(n, dtype=torch.float64) + 1000.0 * rank
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    expected = torch.arange(n, dtype=torch.float64) * world + 1000.0 * world * (world - 1) / 2
    wrong = int((t != expected).sum())

    ids = torch.tensor([rank, group_rank], dtype=torch.int64)
    gathered = [torch.zeros(2, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(gathered, ids)
    pairs = ",".join("%d/%d" % (int(g[0]), int(g[1])) for g in gathered)

    ok = wrong == 0 and rank == env_rank and world == env_world
    print("TORCH_ALLREDUCE rank=%d world=%d group_rank=%d wrong=%d sum=%.1f gathered=%s ok=%d"
          % (rank, world, group_rank, wrong, float(t.sum()), pairs, int(ok)), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
