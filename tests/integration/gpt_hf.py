#!/usr/bin/python3
"""GPT-2 in Hugging Face's layout, in plain PyTorch (transformers' GPT2Model names and Conv1D weights
stored [in, out]; tanh GELU, layer norms with eps 1e-5, the head tied to wte), and safetensors written
and read in a few lines (Debian has no safetensors package). tests/integration/test_init_from.sh drives it:

  make OUT [--vocab V --block T --layers L --heads H --embd C --seed S --dtype f32|bf16|f16|f64]
           [--prefix] [--lm-head] [--mask-buffers] [--no-meta] [--config-json]
      a random GPT-2 (weights large enough that logits are O(1)) as a safetensors file; n_head in its
      __metadata__ unless --no-meta, config.json beside it with --config-json; --prefix names every tensor
      "transformer.<name>" (save_pretrained's), --lm-head adds the tied lm_head.weight, --mask-buffers the
      h.N.attn.bias / masked_bias buffers older checkpoints hold.
  check DUMP FILE [--tp N]
      DUMP is gpt_dump's output for `--init-from FILE` (with --tp, DUMP.rank0 .. each tp rank's logits of
      its vocabulary slice): the logits and loss dtrain computed on DUMP's tokens against this torch model
      loaded from FILE, in float64: loss within 1e-5 * |loss|, logits within 1e-5 * max |logit|.
  export EXPORT FILE [--tol X]
      EXPORT is `dtrain ckpt export --layout hf-gpt2`: load it as transformers would (strictly: every
      GPT2Model tensor, in its shape, nothing else, config from __metadata__) and compare every tensor
      with FILE's within X (default 0: bit for bit after both are widened to float32).
  edit FILE OUT NAME [--drop | --shape A,B | --dtype I32 | --add]
      a broken copy for the bad-input tests: NAME dropped, reshaped, retyped or added."""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

DTYPES = {"F32": (torch.float32, "<f4"), "F64": (torch.float64, "<f8"), "F16": (torch.float16, "<f2"),
          "BF16": (torch.bfloat16, "<i2"), "I32": (torch.int32, "<i4")}
NAMES = {v[0]: k for k, v in DTYPES.items()}
TOL = 1e-5


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        kind = NAMES[t.dtype]
        arr = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        b = arr.astype(DTYPES[kind][1]).tobytes()
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    """({name: tensor in the file's dtype}, metadata)"""
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, d in header.items():
        b, e = d["data_offsets"]
        dt, npt = DTYPES[d["dtype"]]
        a = np.frombuffer(raw, dtype=npt, count=(e - b) // np.dtype(npt).itemsize, offset=8 + n + b).copy()
        t = torch.from_numpy(a)
        out[name] = (t.view(torch.bfloat16) if dt == torch.bfloat16 else t).reshape(tuple(d["shape"]))
    return out, meta


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: y = x @ W + b with W stored [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Attention(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.nh = nh
        self.c_attn = Conv1D(3 * C, C)
        self.c_proj = Conv1D(C, C)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.nh
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.nh, hs).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = Conv1D(4 * C, C)
        self.c_proj = Conv1D(C, 4 * C)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = Attention(C, nh)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """transformers' GPT2Model (its state_dict names) with the tied head of GPT2LMHeadModel."""

    def __init__(self, V, block, L, nh, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(block, C)
        self.h = nn.ModuleList([Block(C, nh) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C, eps=1e-5)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def config_of(a):
    return {"model_type": "gpt2", "vocab_size": a.vocab, "n_positions": a.block, "n_ctx": a.block,
            "n_embd": a.embd, "n_layer": a.layers, "n_head": a.heads, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-05, "architectures": ["GPT2LMHeadModel"], "task_specific_params": {
                "text-generation": {"do_sample": True, "max_length": 50}}}


def make(a):
    torch.manual_seed(a.seed)
    m = GPT2(a.vocab, a.block, a.layers, a.heads, a.embd)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 2:  # Conv1D [in, out]: unit-variance outputs; embeddings 0.5
                p.copy_(torch.randn_like(p) / (math.sqrt(p.shape[0]) if ".c_" in name else 2.0))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16, "f64": torch.float64}[a.dtype]
    sd = {k: v.to(dtype) for k, v in m.state_dict().items()}
    if a.lm_head:
        sd["lm_head.weight"] = sd["wte.weight"].clone()
    if a.mask_buffers:
        for l in range(a.layers):
            sd[f"h.{l}.attn.bias"] = torch.tril(torch.ones(a.block, a.block)).view(1, 1, a.block, a.block)
            sd[f"h.{l}.attn.masked_bias"] = torch.tensor(-1e4)
    pre = "transformer." if a.prefix else ""
    sd = {(k if k == "lm_head.weight" else pre + k): v for k, v in sd.items()}
    meta = {"format": "pt"}
    if not a.no_meta:
        meta.update({k: str(v) for k, v in config_of(a).items() if isinstance(v, (int, float, str))})
    write_safetensors(a.out, sd, meta)
    if a.config_json:
        with open(os.path.join(os.path.dirname(os.path.abspath(a.out)), "config.json"), "w") as f:
            json.dump(config_of(a), f, indent=2)
    print(f"{a.out}: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} values, {a.dtype}")


def load_hf(path, n_head=None, strict=False):
    """The torch model of an hf-gpt2 file, float64, and its config. strict: as transformers' loader would
    insist (no prefix handling, no extra or missing tensors, config in __metadata__)."""
    t, meta = read_safetensors(path)
    if not strict:
        t = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in t.items()}
        t = {k: v for k, v in t.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        head = t.pop("lm_head.weight", None)
        if head is not None and not torch.equal(head, t["wte.weight"]):
            sys.exit(f"FAIL: {path}: lm_head.weight is not wte.weight")
    if strict or "n_head" in meta:
        for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if k not in meta:
                sys.exit(f"FAIL: {path}: __metadata__ lacks {k} (has {sorted(meta)})")
        if meta.get("model_type") != "gpt2" or meta.get("activation_function") != "gelu_new":
            sys.exit(f"FAIL: {path}: __metadata__ model_type/activation_function: {meta}")
        n_head = int(meta["n_head"])
    if n_head is None:
        cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")))
        n_head = cfg["n_head"]
    V, C = t["wte.weight"].shape
    L = 1 + max(int(k.split(".")[1]) for k in t if k.startswith("h."))
    m = GPT2(V, t["wpe.weight"].shape[0], L, n_head, C).double()
    if strict and (int(meta["vocab_size"]), int(meta["n_embd"]), int(meta["n_layer"]),
                   int(meta["n_positions"])) != (V, C, L, t["wpe.weight"].shape[0]):
        sys.exit(f"FAIL: {path}: __metadata__ {meta} does not match the tensors")
    want = m.state_dict()
    missing, extra = sorted(set(want) - set(t)), sorted(set(t) - set(want))
    bad = [k for k in want if k in t and tuple(t[k].shape) != tuple(want[k].shape)]
    if missing or extra or bad:
        sys.exit(f"FAIL: {path}: missing {missing}, unexpected {extra}, misshapen {bad}")
    m.load_state_dict({k: v.double() for k, v in t.items()})
    return m, t


def check(a):
    from gpt_torch_ref import read_dump
    d = read_dump(a.dump)
    m, _ = load_hf(a.file)
    B, T, V = d["B"], d["T"], d["V"]
    idx = torch.from_numpy(d["inputs"].astype(np.int64)).view(B, T)
    tg = torch.from_numpy(d["targets"].astype(np.int64)).view(B, T)
    with torch.no_grad():
        ref_logits, ref_loss = m(idx, tg)
    if a.tp > 1:
        from gpt_torch_tp import read_rank
        parts, losses = [], []
        for r in range(a.tp):
            tp, rank, _, lg, loss = read_rank(f"{a.dump}.rank{r}", B, T, V)
            if (tp, rank) != (a.tp, r):
                sys.exit(f"FAIL: {a.dump}.rank{r} is rank {rank} of tp {tp}")
            parts.append(torch.from_numpy(lg.copy()).double())
            losses.append(loss)
        ours = torch.cat(parts, dim=2)
        our_loss = losses[0]
    else:
        ours = torch.from_numpy(d["logits"].copy()).double().view(B, T, V)
        our_loss = d["loss"]
    failures = []
    dl = abs(our_loss - ref_loss.item())
    rel = ((ours - ref_logits).abs().max() / ref_logits.abs().max()).item()
    print(f"loss: dtrain {our_loss:.7f} torch {ref_loss.item():.7f} |diff|/|loss| {dl / abs(ref_loss.item()):.2e}; "
          f"logits (max |logit| {ref_logits.abs().max().item():.2f}): max|diff|/max|ref| {rel:.2e}")
    if not dl <= TOL * abs(ref_loss.item()):
        failures.append(f"loss differs by {dl:.3e} (> {TOL} * |loss|)")
    if not rel <= TOL:
        failures.append(f"logits differ: {rel:.3e} > {TOL}")
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)
    print("PASS")


def export(a):
    m, t = load_hf(a.export, strict=True)
    src, _ = load_hf(a.file)
    worst, failures = 0.0, []
    ours = dict(m.state_dict())
    for k, v in src.state_dict().items():
        if t[k].dtype != torch.float32:
            failures.append(f"{k}: exported as {t[k].dtype}, not float32")
        diff = (ours[k] - v).abs().max().item()
        worst = max(worst, diff)
        if not diff <= a.tol:
            failures.append(f"{k}: max|diff| {diff:.3e} > {a.tol}")
    print(f"export: {len(t)} tensors in GPT-2's names and shapes, worst max|diff| {worst:.3e} (tolerance {a.tol})")
    if failures:
        print("FAIL: " + "; ".join(failures[:8]))
        sys.exit(1)
    print("PASS")


def edit(a):
    t, meta = read_safetensors(a.file)
    if a.drop:
        del t[a.name]
    elif a.shape:
        t[a.name] = torch.zeros([int(x) for x in a.shape.split(",")], dtype=t[a.name].dtype)
    elif a.dtype:
        t[a.name] = t[a.name].float().to(DTYPES[a.dtype][0])
    elif a.add:
        t[a.name] = torch.zeros(4)
    write_safetensors(a.out, t, meta)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("out")
    for k, v in (("vocab", 64), ("block", 16), ("layers", 2), ("heads", 4), ("embd", 32), ("seed", 1)):
        mk.add_argument("--" + k, type=int, default=v)
    mk.add_argument("--dtype", default="f32")
    for k in ("prefix", "lm-head", "mask-buffers", "no-meta", "config-json"):
        mk.add_argument("--" + k, action="store_true")
    ck = sub.add_parser("check")
    ck.add_argument("dump")
    ck.add_argument("file")
    ck.add_argument("--tp", type=int, default=1)
    ex = sub.add_parser("export")
    ex.add_argument("export")
    ex.add_argument("file")
    ex.add_argument("--tol", type=float, default=0.0)
    ed = sub.add_parser("edit")
    ed.add_argument("file")
    ed.add_argument("out")
    ed.add_argument("name")
    ed.add_argument("--drop", action="store_true")
    ed.add_argument("--add", action="store_true")
    ed.add_argument("--shape")
    ed.add_argument("--dtype")
    a = ap.parse_args()
    {"make": make, "check": check, "export": export, "edit": edit}[a.cmd](a)


if __name__ == "__main__":
    main()
