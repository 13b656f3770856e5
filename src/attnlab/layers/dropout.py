"""Dropout (Srivastava et al. 2014) with a faster CPU path.

``F.dropout`` on a CPU draws its mask with ``bernoulli_``, which PyTorch does not vectorise
there, so drawing the mask dominates a dropout forward + backward. Here the mask is cut from
full-range 64-bit draws, four 16-bit lanes each (a quarter of the generator's Mersenne-Twister
calls of one ``torch.rand`` float per element): element i keeps when its lane is at least a
threshold, so P(keep) = round((1 - p) 2**16) / 2**16, 1 - p to within 2**-17; kept values are
scaled by 1 / (1 - p) exactly as ``nn.Dropout`` does. ``ATTNLAB_DROPOUT_RNG=float`` draws one
float32 uniform per element instead (P(keep) = 1 - p to 2**-24). Speed: ``benchmarks/dropout.py``,
figures in benchmarks/README.md. The mask is saved as bool, one byte an element, as
``native_dropout`` saves it. CUDA, ``inplace`` and p = 1 keep ``F.dropout``.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout", "dropout", "drop", "keep_mask", "DROPOUT_RNG_ENV"]

DROPOUT_RNG_ENV = "ATTNLAB_DROPOUT_RNG"  # "float": one float32 uniform per element (module docstring)
_LANES = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """Bool mask of ``shape``, each element True with probability 1 - p (to 2**-17; module docstring)."""
    kept_lanes = round((1.0 - p) * _LANES)
    if os.environ.get(DROPOUT_RNG_ENV, "int16") == "float" or not 0 < kept_lanes < _LANES:
        return torch.rand(shape, device=device) >= p
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)  # every bit uniform
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform in [-2**15, 2**15)
    return lanes >= (_LANES // 2 - kept_lanes)  # P = kept_lanes / 2**16


class _MaskScale(torch.autograd.Function):
    """x * keep * scale, saving only the bool mask; its backward is itself (so double backward works)."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return _MaskScale.apply(grad, keep, ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True, inplace: bool = False) -> Tensor:
    """``F.dropout(x, p, training, inplace)``; no-op calls return ``x`` itself."""
    if not training or p == 0:
        return x
    if x.device.type == "cpu" and not inplace and 0 < p < 1 and x.is_floating_point():
        keep = keep_mask(x.shape, p, x.device)
        return _MaskScale.apply(x, keep, 1.0 / (1.0 - p))
    return F.dropout(x, p, training, inplace)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, same state dict) on the faster CPU path."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.inplace)


def drop(module: nn.Dropout, x: Tensor) -> Tensor:
    """``module(x)`` without the module call (decoding runs it per token, mostly as a no-op)."""
    return dropout(x, module.p, module.training, module.inplace)
