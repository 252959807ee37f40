"""dtrain's reference GPT (runtime/model/gpt.h) in PyTorch: pre-norm blocks of causal multi-head attention and
a tanh-GELU MLP, layer norms with eps 1e-5, the output head tied to the token embedding, parameters in
gpt.h's order and names. One definition for the correctness test (gpt_torch_ref.py, which checks dtrain
against it) and the throughput anchor (bench/torch_gpt.py), so the benchmark times the model the test
validated."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.nh = nh
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def params_in_order(self):
        return [self.ln1.weight, self.ln1.bias, self.qkv.weight, self.qkv.bias, self.attn_proj.weight,
                self.attn_proj.bias, self.ln2.weight, self.ln2.bias, self.fc.weight, self.fc.bias,
                self.mlp_proj.weight, self.mlp_proj.bias]

    def forward(self, x, mask):
        B, T, C = x.shape
        hs = C // self.nh
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.nh, hs).transpose(1, 2)
        k = k.view(B, T, self.nh, hs).transpose(1, 2)
        v = v.view(B, T, self.nh, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = F.softmax(att.masked_fill(~mask[:T, :T], float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    """Initialised like gpt.c (normal 0.02, residual projections 0.02/sqrt(2L), biases 0, norms 1)."""

    def __init__(self, V, block, L, nh, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(block, C)
        self.h = nn.ModuleList([Block(C, nh) for _ in range(L)])
        self.lnf = nn.LayerNorm(C, eps=1e-5)
        self.register_buffer("mask", torch.tril(torch.ones(block, block, dtype=torch.bool)))
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if n.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif n.endswith("bias"):
                nn.init.zeros_(p)

    def params_in_order(self):
        ps = [self.wte.weight, self.wpe.weight]
        for b in self.h:
            ps += b.params_in_order()
        return ps + [self.lnf.weight, self.lnf.bias]

    def forward(self, idx, targets):
        """(logits, mean cross-entropy over targets != -1)"""
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x, self.mask)
        logits = self.lnf(x) @ self.wte.weight.t()  # tied output head
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def param_names(L):
    names = ["wte", "wpe"]
    for l in range(L):
        names += [f"h.{l}.{s}" for s in ("ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w",
                                          "attn.proj.b", "ln2.w", "ln2.b", "mlp.fc.w", "mlp.fc.b",
                                          "mlp.proj.w", "mlp.proj.b")]
    return names + ["lnf.w", "lnf.b"]
