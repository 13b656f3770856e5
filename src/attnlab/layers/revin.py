"""Reversible instance normalisation (Kim et al., ICLR 2022, "Reversible Instance
Normalization for Accurate Time-Series Forecasting against Distribution Shift").

Each input window is normalised by its own per-channel mean and standard deviation (and an
optional learned per-channel affine map); the model forecasts in that normalised space, and
``denormalise`` undoes both on the forecast with the same window's statistics. The formulas
are those of PatchTST's ``RevIN`` layer (Nie et al. 2023): ``std = sqrt(var + eps)`` with the
biased variance, and the affine map undone as ``(y - bias) / (weight + eps**2)``.

The reference detaches the statistics (no gradient through them), which training keeps. A
gradient attribution of the forecast to its input steps needs the true gradient, which also
runs through the window's mean and std (a step raises the forecast partly by raising the
mean the forecast is denormalised with): ``detach_statistics = False`` gives it, with the same
values (explain's forecasting adapter sets it around its forward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RevIN"]


class RevIN(nn.Module):
    """Shape: ``normalise`` x (B, C, T) -> (B, C, T), keeping (B, C, 1) statistics;
    ``denormalise`` y (B, C, H) -> (B, C, H) with the statistics of the last ``normalise``."""

    def __init__(self, num_channels: int, *, eps: float = 1e-5, affine: bool = True, subtract_last: bool = False,
                 detach_statistics: bool = True):
        super().__init__()
        self.eps, self.subtract_last = eps, subtract_last
        self.detach_statistics = detach_statistics  # False: gradients flow through the statistics (attribution)
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(centre, std), each (B, C, 1): the window's mean (or last value) and biased std."""
        centre = x[..., -1:] if self.subtract_last else x.mean(dim=-1, keepdim=True)
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps)
        if not self.detach_statistics:
            return centre, std
        return centre.detach(), std.detach()  # as the reference: no gradient through the statistics

    def normalise(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        stats = self.statistics(x)
        y = (x - stats[0]) / stats[1]
        if self.weight is not None:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y, stats

    def denormalise(self, y: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:
        if self.weight is not None:
            y = (y - self.bias[:, None]) / (self.weight[:, None] + self.eps * self.eps)
        return y * stats[1] + stats[0]
