"""Positional modules that own parameters or buffers.

- ``LearnedPositionalEmbedding``: a trained table (BERT, GPT-2, ViT).
- ``SinusoidalPositionalEmbedding``: the fixed table of Vaswani et al. 2017 as a buffer.
- ``RelativePositionBias``: T5's bucketed per-head bias (Raffel et al. 2020); pass
  ``positional.relative_bias(module)`` to ``attention`` so no (N, M) tensor is stored.
- ``resample_abs_pos_embed``: a learned 2-D table resampled to another patch grid, for
  fine-tuning at another resolution (Dosovitskiy et al. 2021, §3.2 "Fine-tuning and higher
  resolution"; the same operation as timm's ``resample_abs_pos_embed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention import positional

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding", "RelativePositionBias", "resample_abs_pos_embed"]


def _check_length(n: int, offset: int, max_positions: int, what: str, positions: Tensor | None = None) -> None:
    if positions is not None:
        if positions.shape[-1] != n:
            raise ValueError(f"{what}: positions must be (B, N={n}), got shape {tuple(positions.shape)}")
        n, offset = int(positions.max()) + 1 if positions.numel() else 0, 0
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

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """``positions`` (B, N): each token's own position (a left-padded batch's rows start at 0
        after their padding); else positions ``offset`` .. ``offset + N - 1`` for every row."""
        n = x.shape[1]
        _check_length(n, offset, self.max_positions, "LearnedPositionalEmbedding", positions)
        if positions is not None:
            return x + self.weight[positions].to(x.dtype)  # (B, N, C)
        return x + self.weight[offset : offset + n].to(x.dtype)


class SinusoidalPositionalEmbedding(nn.Module):
    """Adds the fixed sin/cos table. Shape: (B, N, C) -> (B, N, C)."""

    def __init__(self, max_positions: int, dim: int):
        super().__init__()
        self.max_positions = max_positions
        self.register_buffer("table", positional.sinusoidal(max_positions, dim), persistent=False)

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """``positions`` (B, N): each token's own position (a left-padded batch's rows start at 0
        after their padding); else positions ``offset`` .. ``offset + N - 1`` for every row."""
        n = x.shape[1]
        _check_length(n, offset, self.max_positions, "SinusoidalPositionalEmbedding", positions)
        if positions is not None:
            return x + self.table[positions].to(x.dtype)  # (B, N, C)
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


def resample_abs_pos_embed(table: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], *,
                           num_prefix_tokens: int = 1, mode: str = "bicubic", antialias: bool = True) -> Tensor:
    """A ViT position table for another patch grid: the prefix rows (class token) kept as they
    are, the grid rows interpolated as an image with one channel per feature.

    ViT fine-tunes at a higher resolution by "2D interpolation of the pre-trained position
    embeddings, according to their location in the original image" (Dosovitskiy et al. 2021,
    §3.2). As timm's ``resample_abs_pos_embed``: bicubic, ``align_corners=False``, antialiased
    (which matters when the grid shrinks; note that PyTorch's antialiased bicubic uses PIL's
    kernel, a = -0.5), computed in float32 at least and returned in the table's dtype; an equal
    grid returns ``table`` itself.

    Shape: table (1, prefix + old_h * old_w, C) -> (1, prefix + new_h * new_w, C).
    """
    old_h, old_w = (int(s) for s in old_grid)
    new_h, new_w = (int(s) for s in new_grid)
    if table.dim() != 3 or table.shape[0] != 1 or table.shape[1] != num_prefix_tokens + old_h * old_w:
        raise ValueError(f"resample_abs_pos_embed: a table of shape {tuple(table.shape)} does not hold "
                         f"{num_prefix_tokens} prefix rows and a {old_h}x{old_w} grid")
    if (old_h, old_w) == (new_h, new_w):
        return table
    prefix, grid = table[:, :num_prefix_tokens], table[:, num_prefix_tokens:]  # (1, prefix, C), (1, P, C)
    C = table.shape[-1]
    work = grid.to(torch.promote_types(grid.dtype, torch.float32))
    work = work.reshape(1, old_h, old_w, C).permute(0, 3, 1, 2)  # (1, C, old_h, old_w)
    work = F.interpolate(work, size=(new_h, new_w), mode=mode, align_corners=False, antialias=antialias)
    work = work.permute(0, 2, 3, 1).reshape(1, new_h * new_w, C).to(table.dtype)  # (1, new_h * new_w, C)
    return torch.cat([prefix, work], dim=1)
