#!/usr/bin/python3
"""The PyTorch side of bench/train_vs_torch.sh: the same GPT as dtrain's reference model (pre-norm
blocks, causal attention, tanh-GELU MLP, tied output head), the same configs, batches and AdamW
(lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D weights), fp32 on the CPU with
torch.set_num_threads(threads), or on a GPU with --device cuda (--precision bf16: autocast to bf16
around forward and loss, fp32 weights, gradients and AdamW: what dtrain's bf16 does). Prints lines in
train_perf's format (or JSON with --json). With --device cuda and a torch without CUDA it says so and
exits 3.
usage: /usr/bin/python3 bench/torch_gpt.py [--model tiny|larger|all] [--threads 1,2] [--steps N]
                                           [--warmup N] [--seconds S] [--json]
                                           [--device cpu|cuda] [--precision fp32|bf16]"""
import argparse
import json
import os
import sys
import time

import torch

# The model the correctness test validated (tests/integration/gpt_torch_ref.py), not a copy of it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from gpt_torch_model import GPT  # noqa: E402

MODELS = {
    # name: (vocab, block, layers, heads, embd, batch, default steps)
    "tiny": (14, 16, 2, 4, 64, 16, 200),
    "larger": (256, 128, 4, 8, 256, 8, 10),
}


def run(name, threads, steps, warmup, max_s, device="cpu", precision="fp32"):
    V, block, L, nh, C, B, dsteps = MODELS[name]
    steps = steps or dsteps
    torch.set_num_threads(threads)
    torch.manual_seed(1337)
    model = GPT(V, block, L, nh, C)
    if device == "cuda":
        model = model.to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(42)
    data = torch.randint(0, V, (B, block + 1), generator=g)
    x, y = data[:, :-1].contiguous().to(device), data[:, 1:].contiguous().to(device)
    nparams = sum(p.numel() for p in model.parameters())
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    autocast = (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)) if precision == "bf16" else None
    done, t0, first, loss = 0, 0.0, 0.0, None
    for it in range(warmup + steps):
        if it == warmup:
            sync()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        if autocast:
            with autocast():
                _, loss = model(x, y)
        else:
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        if it == 0:
            first = loss.item()
        if it >= warmup:
            done += 1
            if cuda and done % 10:
                continue  # the GPU's queue runs ahead of the host: read the clock after a sync, every 10 steps
            sync()
            if time.perf_counter() - t0 > max_s:
                break
    sync()
    el = time.perf_counter() - t0
    return dict(impl="torch", model=name, params=nparams, batch=B, T=block, threads=threads, steps=done,
                step_ms=el / done * 1e3, tokens_per_s=done * B * block / el, loss_first=first, loss_last=loss.item(),
                device=device, precision=precision)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all", choices=["tiny", "larger", "all"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"torch_gpt: torch {torch.__version__} has no usable CUDA (torch.cuda.is_available() is False)",
              file=sys.stderr)
        sys.exit(3)
    if a.precision == "bf16" and a.device != "cuda":
        print("torch_gpt: --precision bf16 is for --device cuda (the CPU reference is fp32)", file=sys.stderr)
        sys.exit(2)
    names = list(MODELS) if a.model == "all" else [a.model]
    if not a.json:
        print("# %-6s %10s %6s %5s %8s %6s %10s %12s %8s %8s" % ("model", "params", "batch", "T", "threads", "steps",
                                                               "step_ms", "tokens/s", "loss0", "lossN"))
    for name in names:
        for th in [int(t) for t in a.threads.split(",")]:
            r = run(name, th, a.steps, a.warmup, a.seconds, a.device, a.precision)
            if a.json:
                print(json.dumps(r))
            else:
                print("%-8s %10d %6d %5d %8d %6d %10.3f %12.1f %8.4f %8.4f" % (
                    r["model"], r["params"], r["batch"], r["T"], r["threads"], r["steps"], r["step_ms"],
                    r["tokens_per_s"], r["loss_first"], r["loss_last"]), flush=True)


if __name__ == "__main__":
    main()
