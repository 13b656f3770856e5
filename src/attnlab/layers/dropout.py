"""Dropout (Srivastava et al. 2014) with a faster CPU path.

``F.dropout`` on a CPU draws its mask with ``bernoulli_``, which PyTorch does not vectorise
there, so drawing the mask dominates a dropout forward + backward. Drawing uniforms with
``torch.rand`` and keeping ``u >= p`` gives the same distribution (P(keep) = 1 - p, to
float32's 2**-24) faster (``benchmarks/dropout.py``; current figures in benchmarks/README.md).
The mask is saved as bool, one byte an element, as ``native_dropout`` saves it. CUDA, ``inplace`` and p = 1 keep ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout", "dropout", "drop"]


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
        keep = torch.rand(x.shape, device=x.device) >= p  # float32 uniforms whatever x's dtype
        return _MaskScale.apply(x, keep, 1.0 / (1.0 - p))
    return F.dropout(x, p, training, inplace)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, same state dict) on the faster CPU path."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.inplace)


def drop(module: nn.Dropout, x: Tensor) -> Tensor:
    """``module(x)`` without the module call (decoding runs it per token, mostly as a no-op)."""
    return dropout(x, module.p, module.training, module.inplace)
