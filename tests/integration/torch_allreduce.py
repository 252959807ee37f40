"""An unmodified PyTorch program for `dtrain launch`: env:// initialisation of a gloo process group,
one all_reduce, a check of the sum, a barrier. Exits non-zero on a wrong result."""
import os
import sys

import torch
import torch.distributed as dist


def main():
    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert rank == int(os.environ["RANK"]) and world == int(os.environ["WORLD_SIZE"])
    t = torch.full((1024,), float(rank + 1))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    want = world * (world + 1) / 2
    if not torch.allclose(t, torch.full_like(t, want), atol=1e-6):
        print(f"rank {rank}: all_reduce gave {t[0].item()}, want {want}", flush=True)
        return 1
    dist.barrier()
    print(f"rank {rank}/{world} all_reduce ok sum={t[0].item():g} restart={os.environ.get('TORCHELASTIC_RESTART_COUNT')}",
          flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
