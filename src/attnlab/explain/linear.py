"""The exact attribution of a forecast that is an affine map of its input window.

A linear forecaster such as DLinear (Zeng et al., AAAI 2023) forecasts one channel's scaled
window x (L,) as y = W x + b, W (H, L) and b (H,) (``DLinear.effective_weights`` composes its
moving-average decomposition with its two linear maps). The contribution of input step l to
forecast step h is then W[h, l] * x[l], and the contributions plus the bias sum to the forecast
exactly (completeness, which ``linear_attribution`` measures against the model's own output).
So this map IS how the forecast was computed, not a proxy for it as attention is (Jain &
Wallace 2019). Its baseline, the input at which a step contributes nothing, is x[l] = 0: the
channel's training mean under the run's z-scaling; "no contribution" means "as if that step
had been at the training mean".

The relevance drawn per step is |mean over the H forecast steps of W[h, l] * x[l]| (the step's
contribution to the mean forecast, in scaled units), divided by its maximum: in [0, 1], as every
map the views draw, which rescale it as they rescale the others. The explorer and the forecast
plot draw non-negative maps only, so the sign (raising or lowering the forecast) is not offered
as a map; it stays in ``LinearAttribution.contributions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["METHOD", "LinearAttribution", "linear_attribution"]

METHOD = "exact attribution"  # the example's ``methods`` key: the name the explorer's Map selector shows


def _float64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class LinearAttribution:
    """``contributions`` (H, L) W[h, l] * x[l] and ``bias`` (H,), float64, in scaled units;
    ``error``: the largest |sum_l contributions[h, l] + bias[h] - forecast[h]| over h, against
    the model's own forecast (its float32 arithmetic against this float64 sum)."""

    contributions: np.ndarray
    bias: np.ndarray
    error: float

    @property
    def relevance(self) -> np.ndarray:
        """(L,) |each step's contribution to the mean forecast|, divided by the largest (all zero: zeros)."""
        r = np.abs(self.contributions.mean(axis=0))
        top = float(r.max())
        return r / top if top > 0 else np.zeros_like(r)

    def caption(self) -> str:
        """What the bands show, for a figure caption: exact, its baseline, and the completeness check."""
        h = self.contributions.shape[0]
        return (f"the {METHOD} of the forecast to each input step, not attention: the model is linear in its input, "
                f"so step l's contribution W_eff[h, l]\u00b7x[l] to forecast step h is exact; the bands show |each step's "
                f"contribution to the mean of the {h} forecast steps|, scaled to [0, 1]. Baseline: an input of 0, i.e. the "
                f"channel's training mean (the run's z-scaling). Contributions + bias reproduce the model's forecast to "
                f"{self.error:.1g} (scaled units)")


def linear_attribution(weight: Any, bias: Any, x: Any, forecast: Any) -> LinearAttribution:
    """Exact per-step contributions of ``x`` to ``forecast`` = ``weight`` @ ``x`` + ``bias``, in float64.

    ``forecast``: the model's own output for ``x`` (the completeness check compares with it).
    Shape: weight (H, L), bias (H,), x (L,), forecast (H,).
    """
    w, b, s, y = (_float64(v) for v in (weight, bias, x, forecast))
    if w.ndim != 2 or b.shape != (w.shape[0],) or s.shape != (w.shape[1],) or y.shape != b.shape:
        raise ValueError(f"linear_attribution: expected weight (H, L), bias (H,), x (L,), forecast (H,); got "
                         f"{w.shape}, {b.shape}, {s.shape}, {y.shape}")
    contributions = w * s[None, :]  # (H, L)
    error = float(np.max(np.abs(contributions.sum(axis=1) + b - y)))
    if not np.isfinite(error):
        raise ValueError("linear_attribution: the weights, input or forecast hold a value that is not finite")
    return LinearAttribution(contributions=contributions, bias=b, error=error)
