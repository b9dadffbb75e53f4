"""Cross-attention-only token heads of the stage-2 discriminator (Seaweed-APT, arXiv 2501.08316).

Each head has ONE learnable token as query and all visual tokens of one backbone layer as
keys/values: pre-RMSNorm, QK-RMSNorm, output projection, residual, then an MLP (norm, linear,
GELU, linear) with a residual. It summarises the layer into one D-dim vector per sample.

Under context parallelism each rank holds a share of the tokens: every rank attends over its share and
the shares are merged exactly by their log-sum-exp (what a flash-attention kernel does across blocks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apt.core.collectives import stack_over_group


class TokenHead(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"head dim {dim} is not divisible by {num_heads} attention heads")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.norm_query = nn.RMSNorm(dim, eps=eps)
        self.norm_tokens = nn.RMSNorm(dim, eps=eps)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim // num_heads, eps=eps)  # QK-RMSNorm, per attention head
        self.norm_k = nn.RMSNorm(dim // num_heads, eps=eps)
        self.to_out = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.RMSNorm(dim, eps=eps), nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor, group=None) -> torch.Tensor:
        """tokens (B, N, D) -> (B, D); with `group`, tokens is this rank's share of the group's sequence."""
        b, n, d = tokens.shape
        h = self.num_heads
        query = self.query.expand(b, -1, -1).to(tokens.dtype)
        kv = self.norm_tokens(tokens)
        q = self.norm_q(self.to_q(self.norm_query(query)).view(b, 1, h, d // h)).transpose(1, 2)
        k = self.norm_k(self.to_k(kv).view(b, n, h, d // h)).transpose(1, 2)
        v = self.to_v(kv).view(b, n, h, d // h).transpose(1, 2)
        if group is None:
            attn = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = merged_attention(q, k, v, group)
        attn = attn.transpose(1, 2).reshape(b, 1, d)
        x = query + self.to_out(attn)
        x = x + self.mlp(x)
        return x[:, 0]


def merged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the keys of every rank in `group` (B, H, Q, d), from this rank's
    keys and values: each rank's partial output and log-sum-exp, gathered and reweighted. Exact (up
    to rounding) and differentiable; it moves O(B H Q d) numbers, not the tokens."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    lse = scores.logsumexp(-1, keepdim=True)  # (B, H, Q, 1)
    partial = (scores - lse).exp() @ v.float()  # (B, H, Q, d)
    all_lse = stack_over_group(lse, group)  # (ranks, B, H, Q, 1)
    all_partial = stack_over_group(partial, group)
    weights = (all_lse - all_lse.logsumexp(0, keepdim=True)).exp()
    return (weights * all_partial).sum(0).to(v.dtype)


class LogitHead(nn.Module):
    """Concatenate the heads' tokens along channels -> LayerNorm -> Linear -> one logit per sample."""

    def __init__(self, dim: int, num_taps: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim * num_taps)
        self.proj = nn.Linear(dim * num_taps, 1)

    def forward(self, summaries: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(self.norm(torch.cat(summaries, dim=-1)))[:, 0]
