"""Positional schemes as pure functions.

- ``sinusoidal``: fixed 1-D sin/cos table (Vaswani et al. 2017).
- ``sincos_2d``: 2-D sin/cos table for patch grids (MAE / MoCo v3; used by ViT variants).
- ``rope_cos_sin`` / ``apply_rope``: rotary embedding (Su et al. 2021, RoFormer), in the
  rotate-half layout used by GPT-NeoX and Hugging Face Llama.
- ``alibi_slopes`` / ``alibi_bias``: linear biases (Press et al. 2022, ALiBi).
- ``t5_buckets`` / ``relative_bias``: bucketed relative position bias (Raffel et al. 2020, T5).

``alibi_bias`` and ``relative_bias`` return *callables* ``bias(h, i, j)`` rather than
(H, N, M) tensors: block-wise kernels evaluate them one tile at a time, so no (N, M) bias
is ever stored. ``i`` are bottom-right-aligned query positions and ``j`` key positions.
Learned tables with parameters live in ``attnlab.layers.positional``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = [
    "sinusoidal",
    "sincos_2d",
    "rope_cos_sin",
    "apply_rope",
    "alibi_slopes",
    "alibi_bias",
    "t5_buckets",
    "relative_bias",
    "BiasFunction",
]


def sinusoidal(num_positions: int, dim: int, *, base: float = 10000.0) -> Tensor:
    """Fixed sin/cos table. Shape: (N, C); even columns sin, odd columns cos."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dim, got dim={dim}")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.float()


def sincos_2d(height: int, width: int, dim: int) -> Tensor:
    """2-D sin/cos table for a (height, width) grid, row-major. Shape: (height*width, C).

    Half of the channels encode the row, half the column (MAE, He et al. 2022).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need dim divisible by 4, got dim={dim}")
    rows = sinusoidal(height, dim // 2)  # (height, C/2)
    cols = sinusoidal(width, dim // 2)  # (width, C/2)
    grid_rows = rows[:, None, :].expand(height, width, dim // 2)
    grid_cols = cols[None, :, :].expand(height, width, dim // 2)
    return torch.cat([grid_rows, grid_cols], dim=-1).reshape(height * width, dim)


def rope_cos_sin(
    positions: Tensor, head_dim: int, *, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Rotary tables for integer positions (N,). Returns cos, sin, each (N, D)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    # Angles in float64 (the tables are small): in float32, position * frequency loses ~1e-5
    # relative precision by position 100, so RoPE scores would drift with absolute position.
    work = torch.float32 if positions.device.type == "mps" else torch.float64  # MPS has no float64
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=work) / head_dim))
    angles = positions.to(work)[:, None] * inv_freq[None, :]  # (N, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (N, D)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x by position. Shape: x (B, H, N, D), cos/sin (N, D) -> (B, H, N, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class BiasFunction:
    """A score bias evaluated from indices: ``bias(h, i, j) -> (H', N', M')`` tensor.

    ``tensors`` lists the trainable tensors the bias reads, so kernels that recompute
    tiles in their backward pass can route gradients to them.
    """

    tensors: tuple[Tensor, ...] = ()
    # True when the bias depends on j - i only (a Toeplitz matrix): kernels may then evaluate
    # it once per relative offset, as ``bias(h, zeros, j - i)``.
    translation_invariant: bool = False

    def __call__(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def alibi_slopes(num_heads: int) -> Tensor:
    """Per-head ALiBi slopes (Press et al. 2022, incl. the non-power-of-two rule). Shape: (H,)."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (k + 1) for k in range(n)]

    if num_heads <= 0:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two_slopes(closest)
    if closest < num_heads:
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class _AlibiBias(BiasFunction):
    translation_invariant = True

    def __init__(self, num_heads: int):
        self.num_heads = num_heads
        self.slopes = alibi_slopes(num_heads)

    def __call__(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        slopes = self.slopes.to(h.device)[h]  # (H, 1, 1)
        # Symmetric distance: for causal attention only j <= i survives, matching the paper.
        return -slopes * (i - j).abs().to(slopes.dtype)

    def __repr__(self) -> str:
        return f"alibi_bias(num_heads={self.num_heads})"


def alibi_bias(num_heads: int) -> BiasFunction:
    """ALiBi as a bias callable: ``-slope_h * |i - j|``."""
    return _AlibiBias(num_heads)


def t5_buckets(
    relative_position: Tensor, *, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """T5's bucket index for ``relative_position = j - i`` (Raffel et al. 2020, as in HF T5)."""
    buckets = torch.zeros_like(relative_position)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # Log-spaced buckets beyond max_exact, up to max_distance.
    large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class RelativeBiasTable(Protocol):
    """What ``relative_bias`` reads of a T5 bias module (``layers.RelativePositionBias``);
    a protocol, so this pure-function module never imports the layers above it."""

    embedding: nn.Embedding  # (num_buckets, H)
    bidirectional: bool
    num_buckets: int
    max_distance: int


class _RelativeBias(BiasFunction):
    translation_invariant = True

    def __init__(self, module: RelativeBiasTable):
        self.module = module

    @property
    def tensors(self) -> tuple[Tensor, ...]:  # type: ignore[override]
        return (self.module.embedding.weight,)

    def __call__(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        m = self.module
        buckets = t5_buckets(
            j - i, bidirectional=m.bidirectional, num_buckets=m.num_buckets, max_distance=m.max_distance
        )  # (N, M)
        values = m.embedding.weight[buckets]  # (N, M, H)
        return values.permute(2, 0, 1)[h.flatten()]  # (H', N, M)

    def __repr__(self) -> str:
        return f"relative_bias({self.module!r})"


def relative_bias(module: RelativeBiasTable) -> BiasFunction:
    """T5 relative position bias of ``module`` (a ``layers.RelativePositionBias``) as a callable."""
    return _RelativeBias(module)
