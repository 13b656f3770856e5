"""DLinear (Zeng et al., AAAI 2023, "Are Transformers Effective for Time Series Forecasting?").

Each channel's input window (length L) is split by a moving average (kernel 25, the window
padded at both ends by repeating its first and last values) into a trend and a remainder
("seasonal"); one linear map L -> H forecasts each part and the two forecasts are added.
The maps are shared by all channels (the paper's default), or one pair per channel
(``individual=True``). No normalisation: the paper's DLinear works on the globally scaled
series. Layers are ``nn.Linear`` with PyTorch's default initialisation, as the authors' code.

The whole model is linear in its input, so each channel's forecast is exactly one affine map of
that channel's window, ``y = W_eff x + b`` (``DLinear.effective_weights``): the exact attribution
of a forecast to its input steps, which attention maps only approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.config import check_positive
from attnlab.errors import ConfigError
from attnlab.models.registry import register_model

__all__ = ["DLinear", "DLinearConfig", "forecast_example", "moving_average_decomposition", "moving_average_matrix"]


def forecast_example(config, batch: int = 2) -> tuple[Tensor]:
    """A random batch that fits a forecasting config: (B, C, L)."""
    return (torch.randn(batch, config.in_channels, config.seq_len),)


def moving_average_decomposition(x: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """(seasonal, trend) of each series: trend = moving average over ``kernel_size`` steps with
    replicate padding of ``(kernel_size - 1) // 2`` steps at both ends, seasonal = x - trend.

    Shape: x (B, C, L) -> two (B, C, L') with L' = L + 2 * ((k - 1) // 2) - k + 1 (= L for odd k).
    """
    pad = (kernel_size - 1) // 2
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], pad), x, x[..., -1:].expand(*x.shape[:-1], pad)], dim=-1)
    B, C, T = padded.shape
    trend = F.avg_pool1d(padded.reshape(B * C, 1, T), kernel_size, stride=1).reshape(B, C, -1)  # (B, C, L')
    return x - trend, trend


def moving_average_matrix(length: int, kernel_size: int, *, dtype: torch.dtype = torch.float64,
                          device: torch.device | str | None = None) -> Tensor:
    """The trend of ``moving_average_decomposition`` as a matrix: trend = x @ A.T for an odd kernel.

    Replicate padding repeats the first and last values, so a window reaching past an end reads
    the end value more than once: row t holds 1/k at each clamped index t - pad .. t + pad, summed.
    Shape: -> A (L, L), each row summing to 1.
    """
    pad = (kernel_size - 1) // 2
    index = (torch.arange(length, device=device)[:, None] + torch.arange(kernel_size, device=device) - pad).clamp(0, length - 1)
    weights = torch.full(index.shape, 1.0 / kernel_size, dtype=dtype, device=device)
    return torch.zeros(length, length, dtype=dtype, device=device).scatter_add_(1, index, weights)  # (L, L)


@dataclass
class DLinearConfig:
    seq_len: int = 336  # L, input steps; set from the data
    horizon: int = 96  # H, forecast steps; set from the data
    in_channels: int = 1  # C; set from the data
    out_channels: int = 0  # channels forecast (features MS: 1, the last input channel); 0 = in_channels
    kernel_size: int = 25  # moving-average window of the decomposition (the paper's 25)
    individual: bool = False  # one pair of linear maps per channel instead of one shared pair

    def __post_init__(self) -> None:
        check_positive("DLinearConfig", seq_len=self.seq_len, horizon=self.horizon, in_channels=self.in_channels,
                       kernel_size=self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"DLinearConfig.kernel_size must be odd (the trend stays aligned), got {self.kernel_size}")
        if not 0 <= self.out_channels <= self.in_channels:
            raise ConfigError(f"DLinearConfig.out_channels must be in [0, in_channels={self.in_channels}], got {self.out_channels}")


class DLinear(nn.Module):
    """Shape: series (B, C, L) -> forecast (B, C_out, H) (the last C_out channels)."""

    def __init__(self, config: DLinearConfig):
        super().__init__()
        c = self.config = config
        n = c.in_channels if c.individual else 1
        self.seasonal = nn.ModuleList(nn.Linear(c.seq_len, c.horizon) for _ in range(n))
        self.trend = nn.ModuleList(nn.Linear(c.seq_len, c.horizon) for _ in range(n))

    def forward(self, series: Tensor) -> Tensor:
        c = self.config
        if series.dim() != 3 or series.shape[1] != c.in_channels or series.shape[2] != c.seq_len:
            raise ValueError(f"DLinear expects series (B, {c.in_channels}, {c.seq_len}), got shape {tuple(series.shape)}")
        seasonal, trend = moving_average_decomposition(series, c.kernel_size)  # (B, C, L) each
        if c.individual:
            out = torch.stack([s(seasonal[:, i]) + t(trend[:, i]) for i, (s, t) in enumerate(zip(self.seasonal, self.trend))], dim=1)
        else:
            out = self.seasonal[0](seasonal) + self.trend[0](trend)  # (B, C, H)
        return out[:, -c.out_channels:] if c.out_channels else out

    def effective_weights(self, channel: int) -> tuple[Tensor, Tensor]:
        """The affine map from input ``channel``'s window to its forecast: (W_eff, b) with
        forecast = W_eff @ x + b exactly (channels never mix; Zeng et al., AAAI 2023).

        With A the moving-average matrix (``moving_average_matrix``), the seasonal part is
        (I - A) x and the trend A x, so W_eff = W_s (I - A) + W_t A and b = b_s + b_t, from the
        channel's own pair of maps when ``individual`` (else the shared pair). ``channel`` is an
        INPUT channel (negative counts from the last); forecast channel j of an ``out_channels``
        model is input channel ``in_channels - out_channels + j``. W_eff[h, l] * x[l] is then
        the exact contribution of input step l to forecast step h, relative to an input of 0.
        In the parameters' dtype and device (float64 after ``.double()``), without gradient.

        Shape: -> W_eff (H, L), b (H,).
        """
        c = self.config
        if not -c.in_channels <= channel < c.in_channels:
            raise ValueError(f"DLinear.effective_weights: channel {channel} is out of range: the model reads "
                             f"{c.in_channels} input channels")
        i = channel % c.in_channels if c.individual else 0
        seasonal, trend = self.seasonal[i], self.trend[i]
        with torch.no_grad():
            w = seasonal.weight  # (H, L)
            avg = moving_average_matrix(c.seq_len, c.kernel_size, dtype=w.dtype, device=w.device)  # (L, L)
            weight = w + (trend.weight - w) @ avg  # W_s (I - A) + W_t A
            return weight, seasonal.bias + trend.bias


@register_model("dlinear", config=DLinearConfig, example_inputs=forecast_example,
                description="DLinear forecaster: moving-average decomposition + two linear maps (Zeng et al. 2023)")
def dlinear(config: DLinearConfig) -> DLinear:
    return DLinear(config)
