"""Tiny models built from TransformerBlock for the explain/ tests, and a float64 Integrated Gradients reference."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.layers import TransformerBlock


class TinyViT(nn.Module):
    """Patch tokens (B, P, C) -> class token + blocks -> logits; ``patch_grid`` like a ViT."""

    def __init__(self, dim: int = 16, heads: int = 4, depth: int = 3, grid: tuple[int, int] = (2, 3),
                 num_prefix_tokens: int = 1, num_kv_heads: int | None = None, is_causal: bool = False, classes: int = 3):
        super().__init__()
        self.patch_grid = grid
        self.num_prefix_tokens = num_prefix_tokens
        self.is_causal = is_causal
        self.prefix = nn.Parameter(torch.randn(1, num_prefix_tokens, dim)) if num_prefix_tokens else None
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, num_kv_heads=num_kv_heads, mlp_ratio=2.0) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def tokens(self, x: Tensor) -> Tensor:
        if self.prefix is None:
            return x
        return torch.cat([self.prefix.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, N, C)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h, mask=mask, is_causal=self.is_causal)
        h = self.norm(h)
        pooled = h[:, 0] if self.num_prefix_tokens else h.mean(dim=1)
        return self.head(pooled)


def manual_weights(block: TransformerBlock, h: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """Softmax of the block's own q k^T / sqrt(D), in float64, written out by hand. Shape: (B, H, N, N)."""
    attn = block.attn
    b, n, _ = h.shape
    hn = block.norm1(h).double()
    q = nn.functional.linear(hn, attn.q_proj.weight.double(), attn.q_proj.bias.double())
    k = nn.functional.linear(hn, attn.k_proj.weight.double(), attn.k_proj.bias.double())
    q = q.view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, N, D)
    k = k.view(b, n, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # (B, G, N, D)
    k = k.repeat_interleave(attn.num_heads // attn.num_kv_heads, dim=1)  # (B, H, N, D)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    keep = torch.ones(b, 1, n, n, dtype=torch.bool)
    if mask is not None:
        keep = keep & mask[:, None, None, :]
    if is_causal:
        keep = keep & torch.ones(n, n, dtype=torch.bool).tril()
    scores = scores.masked_fill(~keep, float("-inf"))
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def block_inputs(model: TinyViT, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
    """The input of every block, from a plain forward with no hooks."""
    h = model.tokens(x)
    seen = []
    with torch.no_grad():
        for block in model.blocks:
            seen.append(h)
            h = block(h, mask=mask, is_causal=model.is_causal)
    return seen


def ig_float64(f, x, base, target, nodes):
    """Integrated Gradients written out in float64, independent of Captum: Gauss-Legendre with
    ``nodes`` nodes on [0, 1] of d f_target / dx along base + t (x - base), times (x - base)."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    total = torch.zeros_like(x)
    for ti, wi in zip((t + 1) / 2, w / 2):
        xi = (base + float(ti) * (x - base)).requires_grad_(True)
        (g,) = torch.autograd.grad(f(xi).gather(1, target[:, None]).sum(), xi)
        total += float(wi) * g
    return total * (x - base)  # (B, N, C)

