"""DLinear (Zeng et al., AAAI 2023, "Are Transformers Effective for Time Series Forecasting?").

Each channel's input window (length L) is split by a moving average (kernel 25, the window
padded at both ends by repeating its first and last values) into a trend and a remainder
("seasonal"); one linear map L -> H forecasts each part and the two forecasts are added.
The maps are shared by all channels (the paper's default), or one pair per channel
(``individual=True``). No normalisation: the paper's DLinear works on the globally scaled
series. Layers are ``nn.Linear`` with PyTorch's default initialisation, as the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.config import check_positive
from attnlab.errors import ConfigError
from attnlab.models.registry import register_model

__all__ = ["DLinear", "DLinearConfig", "forecast_example", "moving_average_decomposition"]


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


@register_model("dlinear", config=DLinearConfig, example_inputs=forecast_example,
                description="DLinear forecaster: moving-average decomposition + two linear maps (Zeng et al. 2023)")
def dlinear(config: DLinearConfig) -> DLinear:
    return DLinear(config)
