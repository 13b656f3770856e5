"""What a task hands explain/ to attribute and perturb: ``Positions``.

Every relevance method and faithfulness measure works on one float tensor whose dim 1 is the
positions a map scores (patches, tokens, time-step spans), and one module from that tensor to
logits. The task adapter (``tasks/<family>.py``) builds it, because only the task knows what a
position is and what "removed" means for its modality (ROAD, Rong et al. 2022: perturbation
metrics partly measure the replacement value, so the value is named, never implied):

- images: the mean training pixel per channel, every pixel of a removed patch (``Patches``);
- audio: the mean training frame (mean over training spectrograms and time, per mel band);
- text: the embedding of the ``[MASK]`` token where the vocabulary has one, else of ``<pad>``;
- time series: the training mean per channel (over series and time), every step of a span;
- forecasting: the target channel's training mean (0 once scaled), every step of a span.

``Patches`` and ``Spans`` cut an image / a series into positions and fold them back inside
the forward, so input x gradient and Integrated Gradients attribute to exactly the positions
the attention methods score (one per non-prefix token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.explain.readout import CLASS, Readout

__all__ = ["Patches", "Positions", "Spans"]


@dataclass
class Positions:
    """A batch of inputs as positions, with the forward and the removed value to perturb them.

    Attributes:
        x: (B, N, F) float, N positions of F features each.
        forward: an ``nn.Module`` ``x -> logits (B, K)``; it holds the attnlab model (so
            attention capture and layer re-initialisation reach it) and its token ``i +
            num_prefix_tokens`` covers position ``i``.
        removed: broadcastable to ``x``, (F,) or (N, F): what a removed position becomes.
        num_prefix_tokens: class / register tokens the model prepends (not positions).
        labels: (B,) true classes (-1: none), or None.
        index: (B,) each row's index in the split it came from (a task may regroup examples,
            e.g. text by length, so rows of equal length batch without padding).
        removed_means: the removed value in words, shown beside every score.
        order: the order a report draws the positions in (audio: low bands at the bottom);
            None is their own order.
        readout: what the faithfulness measures read of the outputs (``explain.readout``:
            a classifier's, a multi-label or a regression model's).
        sequence: for a model that runs each row as several sequences through its attention
            (channel-independent PatchTST: one per input channel, row-major, so capture sees
            B * C maps), the one of each row the attention methods read; None: one per row.
    """

    x: Tensor
    forward: nn.Module
    removed: Tensor
    num_prefix_tokens: int
    labels: Tensor | None = None
    index: Tensor | None = None
    removed_means: str = ""
    order: Sequence[int] | None = None
    readout: Readout = CLASS
    sequence: int | None = None

    def __post_init__(self) -> None:
        if self.x.dim() != 3:
            raise ValueError(f"Positions.x must be (B, N, F), got shape {tuple(self.x.shape)}")
        if self.index is None:
            self.index = torch.arange(self.x.shape[0])
        torch.broadcast_shapes(self.removed.shape, self.x.shape)  # raises naming both shapes

    def __len__(self) -> int:
        return self.x.shape[0]


def _pair(p: int | Sequence[int]) -> tuple[int, int]:
    return (int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1]))


class Patches(nn.Module):
    """(B, P, C*ph*pw) patches -> image (B, C, H, W) -> ``model`` logits.

    Patches are row-major over the (H / ph, W / pw) grid and channel-major inside (as
    ``F.unfold``), the order of a ViT's patch tokens.
    """

    def __init__(self, model: nn.Module, image_shape: Sequence[int], patch: int | Sequence[int]):
        super().__init__()
        self.model, self.shape, self.patch = model, tuple(int(s) for s in image_shape), _pair(patch)

    def forward(self, patches: Tensor) -> Tensor:
        _, h, w = self.shape
        cols = patches.transpose(1, 2)  # (B, C*ph*pw, P)
        return self.model(nn.functional.fold(cols, (h, w), self.patch, stride=self.patch))

    def cut(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, P, C*ph*pw)."""
        return nn.functional.unfold(images, self.patch, stride=self.patch).transpose(1, 2)


class Spans(nn.Module):
    """(B, P, C*s) spans of ``s`` time steps -> series (B, C, T) -> ``model`` logits.

    ``count`` spans cover steps [0, count * s): a series shorter than that is padded by ``cut``
    and cropped back in ``forward`` (the last span covers the steps left over, as the model's
    last token does); steps past it (a pooling stem drops a last odd step) are not positions:
    ``cut`` keeps them as they are and ``forward`` puts them back, so the forward on the intact
    positions is the model's own output on the series.
    """

    def __init__(self, model: nn.Module, channels: int, length: int, span: int, count: int):
        super().__init__()
        self.model, self.channels, self.length = model, int(channels), int(length)
        self.span, self.count = int(span), int(count)
        self.register_buffer("tail", torch.zeros(0), persistent=False)

    def forward(self, spans: Tensor) -> Tensor:
        b, p, _ = spans.shape
        series = spans.reshape(b, p, self.channels, self.span).permute(0, 2, 1, 3)  # (B, C, P, s)
        series = series.reshape(b, self.channels, p * self.span)[..., : self.length]  # (B, C, min(P*s, T))
        if self.tail.numel():  # Integrated Gradients calls with the batch repeated per step
            series = torch.cat([series, self.tail.repeat(b // self.tail.shape[0], 1, 1).to(series.dtype)], -1)
        return self.model(series)

    def cut(self, series: Tensor) -> Tensor:
        """(B, C, T) -> (B, count, C*s); keeps the steps past count * s for ``forward``."""
        b, c, t = series.shape
        n = self.count * self.span
        self.tail = series[..., n:].detach().clone() if t > n else series.new_zeros(0)
        body = nn.functional.pad(series[..., :n], (0, max(n - t, 0)))  # (B, C, count*s)
        return body.reshape(b, c, self.count, self.span).permute(0, 2, 1, 3).reshape(b, self.count, c * self.span)
