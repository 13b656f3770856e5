"""Forecasting's explain adapter: the target channel's input window as ``Positions``.

What a map explains: the MEAN of the target channel's H-step forecast, in scaled units (one
output, (B, 1)); the faithfulness measures read it as a regression (``Readout("regression")``:
d is the change of that mean in the target's training standard deviations, since the series is
z-scaled with the training rows' statistics). Other channels stay as they are: a map says which
steps of the target's own history the forecast rests on.

Positions: the target channel's L input steps cut into the spans the model's tokens start.

- DLinear: one position per input step (as its report figure draws its exact attribution).
- PatchTST: one position per patch token, but patches overlap (``patch_len`` 16, ``stride``
  8: token i reads steps [8i, 8i + 16)), and a step cannot be both removed and intact. Position
  i is token i's OWN share, the ``stride`` steps from its start to the next token's start (the
  last position: from its start to L, the steps left over; ``model.patch_size`` is ``stride``
  for this reason). The shares partition the window, so removing every position removes every
  step, each step is removed exactly once, and input x gradient / Integrated Gradients add up
  over positions without counting a step twice. Removing position i alone removes the first
  half of token i and the second half of token i - 1 (the end padding repeats the last step,
  so the last token is removed with its own share). With ``stride >= patch_len`` a share holds
  the whole patch. Where the end padding makes a token of padding alone (``patch_len <=
  stride``), its share is empty: removing it changes nothing and its gradient is 0.

Removed = 0 in scaled units, the target channel's training mean, every step of a removed span.
The forward lets gradients run through RevIN's window statistics, which PatchTST detaches as its
reference trains (``RevIN.detach_statistics``): without that, input x gradient and Integrated
Gradients would attribute a function other than the model's forecast (on a tiny model, IG's sum
over positions had the wrong sign for 2 of 3 windows against f(x) - f(removed)).
PatchTST runs each channel as its own sequence through its attention (channel independence), so
capture sees B * C sequences; ``Positions.sequence`` names the target's (the last channel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.layers.revin import RevIN

__all__ = ["TargetWindow", "forecast_positions", "own_spans"]


def own_spans(token_spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Each token's own input steps: from its start to the next token's start, the last to ``length``
    (clipped to [0, length]; an empty span where a token starts at or past ``length``)."""
    starts = [min(int(a), length) for a, _ in token_spans]
    ends = starts[1:] + [length]
    if any(b < a for a, b in zip(starts, ends)) or (starts and starts[0] != 0):
        raise ConfigError(f"forecasting positions: token spans must start at step 0 in increasing order, got {token_spans}")
    return list(zip(starts, ends))


class TargetWindow(nn.Module):
    """(B, N, F) positions of the target channel's window -> (B, 1) the mean of its forecast.

    Position i holds the steps ``spans[i]`` = [a, b) in its first b - a features (F is the
    widest span; the features past a span's width are unread, so they get no gradient). The
    forward writes them into the target channel (input channel ``channel``) of the series
    ``cut`` kept and returns ``model(series)[:, -1].mean(-1)``: the last forecast channel is the
    target's for features M and MS alike.
    """

    def __init__(self, model: nn.Module, spans: list[tuple[int, int]], length: int, channel: int):
        super().__init__()
        self.model, self.channel, self.length = model, int(channel), int(length)
        self.spans = [(int(a), int(b)) for a, b in spans]
        if [t for a, b in self.spans for t in range(a, b)] != list(range(self.length)):
            raise ConfigError(f"forecasting positions: spans {self.spans} do not cut steps 0..{self.length - 1} in order")
        self.width = max([b - a for a, b in self.spans] + [1])
        # step t of the window is feature t - a of position i (a its span's start): a flat index into (N * F)
        index = [i * self.width + t - a for i, (a, b) in enumerate(self.spans) for t in range(a, b)]
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long), persistent=False)
        self.register_buffer("context", torch.zeros(0), persistent=False)

    def cut(self, series: Tensor) -> Tensor:
        """(B, C, L) scaled windows -> (B, N, F) positions of channel ``channel``; the whole
        windows are kept as the context the forward puts the target channel back into."""
        b = series.shape[0]
        self.context = series.detach().clone()
        self.index = self.index.to(series.device)  # the wrapper is built on the CPU; the model may sit on a GPU
        flat = series.new_zeros(b, len(self.spans) * self.width)
        flat[:, self.index] = series[:, self.channel]
        return flat.reshape(b, len(self.spans), self.width)

    def forward(self, positions: Tensor) -> Tensor:
        b = positions.shape[0]
        context = self.context.to(positions.dtype)
        if b != context.shape[0]:  # Integrated Gradients calls with the batch repeated per step
            context = context.repeat(b // context.shape[0], 1, 1)
        target = positions.reshape(b, -1)[:, self.index]  # (B, L)
        series = torch.cat([context[:, : self.channel], target[:, None], context[:, self.channel + 1:]], dim=1)  # (B, C, L)
        with _gradient_through_statistics(self.model):
            return self.model(series)[:, -1].mean(-1, keepdim=True)  # (B, 1)


@contextlib.contextmanager
def _gradient_through_statistics(model: nn.Module) -> Iterator[None]:
    """PatchTST's RevIN detaches the window's mean and std (as the reference trains); gradient
    methods need the forecast's true gradient, so they flow through them here (same values)."""
    revins = [m for m in model.modules() if isinstance(m, RevIN)]
    before = [m.detach_statistics for m in revins]
    for m in revins:
        m.detach_statistics = False
    try:
        yield
    finally:
        for m, b in zip(revins, before):
            m.detach_statistics = b


def _spans(model: nn.Module, length: int) -> list[tuple[int, int]]:
    if hasattr(model, "token_spans"):  # PatchTST: its patch tokens' own shares
        return own_spans(model.token_spans(), length)
    if hasattr(model, "effective_weights"):  # DLinear: one position per input step
        return [(t, t + 1) for t in range(length)]
    raise ConfigError(f"model {type(model).__name__} has neither patch tokens nor per-step weights to attribute to")


def forecast_positions(model: nn.Module, task_data: Any, items: list, index: list[int]) -> list:
    """(window (C_in, L), truth) ``items`` as ``Positions`` of the target channel (the last input
    channel): see the module docstring. ``task_data`` is not read: removed is 0, the training mean
    of the scaled target, so ``attnlab explain RUN file.csv`` needs no training data."""
    from attnlab.explain.positions import Positions
    from attnlab.explain.readout import Readout

    weight = next(model.parameters())
    series = torch.stack([it[0] for it in items]).to(weight.device, weight.dtype)  # (B, C_in, L), as the model computes
    _, c, length = series.shape
    wrap = TargetWindow(model, _spans(model, length), length, c - 1)
    x = wrap.cut(series)
    return [Positions(x, wrap, x.new_zeros(wrap.width), 0, index=torch.as_tensor(index),
                      removed_means="the target channel's training mean (0 once scaled), every step of a span; "
                                    "other channels intact",
                      readout=Readout("regression"), sequence=c - 1)]
