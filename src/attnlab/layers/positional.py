"""Positional modules that own parameters or buffers.

- ``LearnedPositionalEmbedding``: a trained table (BERT, GPT-2, ViT).
- ``SinusoidalPositionalEmbedding``: the fixed table of Vaswani et al. 2017 as a buffer.
- ``RelativePositionBias``: T5's bucketed per-head bias (Raffel et al. 2020); pass
  ``positional.relative_bias(module)`` to ``attention`` so no (N, M) tensor is stored.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.attention import positional

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding", "RelativePositionBias"]


def _check_length(n: int, offset: int, max_positions: int, what: str) -> None:
    if offset + n > max_positions:
        raise ValueError(
            f"{what}: sequence needs positions up to {offset + n}, but the model has {max_positions} "
            f"(max_positions); use shorter inputs or a larger max_positions"
        )


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned (max_positions, C) table. Shape: (B, N, C) -> (B, N, C)."""

    def __init__(self, max_positions: int, dim: int, *, init_std: float = 0.02):
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.randn(max_positions, dim) * init_std)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (a position table; timm's convention)."""
        return {"weight"}

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        n = x.shape[1]
        _check_length(n, offset, self.max_positions, "LearnedPositionalEmbedding")
        return x + self.weight[offset : offset + n].to(x.dtype)


class SinusoidalPositionalEmbedding(nn.Module):
    """Adds the fixed sin/cos table. Shape: (B, N, C) -> (B, N, C)."""

    def __init__(self, max_positions: int, dim: int):
        super().__init__()
        self.max_positions = max_positions
        self.register_buffer("table", positional.sinusoidal(max_positions, dim), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        n = x.shape[1]
        _check_length(n, offset, self.max_positions, "SinusoidalPositionalEmbedding")
        return x + self.table[offset : offset + n].to(x.dtype)


class RelativePositionBias(nn.Module):
    """T5 relative position bias: one scalar per (bucket of j - i, head)."""

    def __init__(self, num_heads: int, *, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
        if exact < 1 or max_distance <= exact:
            raise ValueError(
                f"RelativePositionBias: max_distance ({max_distance}) must exceed the exact-bucket range ({exact}) "
                f"of num_buckets={num_buckets} (bidirectional={bidirectional})"
            )
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def bias_function(self) -> positional.BiasFunction:
        return positional.relative_bias(self)

    def forward(self, n: int, m: int) -> Tensor:
        """The dense bias, for inspection or small inputs. Shape: (1, H, N, M)."""
        fn = self.bias_function()
        device = self.embedding.weight.device
        heads = torch.arange(self.num_heads, device=device)[:, None, None]
        i = (torch.arange(n, device=device) + (m - n))[:, None]
        j = torch.arange(m, device=device)[None, :]
        return fn(heads, i, j).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, max_distance={self.max_distance}, bidirectional={self.bidirectional}"
