"""Cross-attention-only token heads of the stage-2 discriminator (Seaweed-APT, arXiv 2501.08316).

Each head has ONE learnable token as query and all visual tokens of one backbone layer as
keys/values: pre-RMSNorm, QK-RMSNorm, output projection, residual, then an MLP (norm, linear,
GELU, linear) with a residual. It summarises the layer into one D-dim vector per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) -> (B, D)."""
        b, n, d = tokens.shape
        h = self.num_heads
        query = self.query.expand(b, -1, -1).to(tokens.dtype)
        kv = self.norm_tokens(tokens)
        q = self.norm_q(self.to_q(self.norm_query(query)).view(b, 1, h, d // h)).transpose(1, 2)
        k = self.norm_k(self.to_k(kv).view(b, n, h, d // h)).transpose(1, 2)
        v = self.to_v(kv).view(b, n, h, d // h).transpose(1, 2)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, d)
        x = query + self.to_out(attn)
        x = x + self.mlp(x)
        return x[:, 0]


class LogitHead(nn.Module):
    """Concatenate the heads' tokens along channels -> LayerNorm -> Linear -> one logit per sample."""

    def __init__(self, dim: int, num_taps: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim * num_taps)
        self.proj = nn.Linear(dim * num_taps, 1)

    def forward(self, summaries: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(self.norm(torch.cat(summaries, dim=-1)))[:, 0]
