"""The "Encoder" of Fawaz et al. 2019 (after Serrà et al. 2018), as their published code builds it:
the reference the UCR targets come from, reimplemented to run side by side with ``ts-transformer``.

Source: hfawaz/dl-4-tsc, ``classifiers/encoder.py`` (Keras). Three convolution blocks (128 / 256 /
512 filters, kernels 5 / 11 / 21, "same" padding), each instance norm -> PReLU (one slope per
channel, initialised 0) -> dropout 0.2, the first two followed by max pooling 2; the last block's
512 channels split in two halves, data and gate; the gate goes through a softmax **over channels**
at each time step (Keras ``Softmax()`` acts on the last axis of (B, T, C)) and multiplies the data;
a per-step dense 256 with sigmoid, instance norm, flatten, and a linear softmax classifier. Instance
norm is tensorflow-addons' (per channel over time, learned scale and shift, epsilon 1e-3); weights
Glorot-uniform, biases zero (Keras defaults). Training there: Adam, lr 1e-5, batch 12, 100 epochs,
categorical cross-entropy, the epoch of lowest training loss kept (here: the last epoch, constant lr;
``TRAIN`` below).

Registered as ``ts-encoder-ref`` for the ``timeseries`` task when this module is imported: it is a
benchmark peer, not a product model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.config import check_positive
from attnlab.models.registry import list_models, register_model
from attnlab.tasks import TASKS
from timeseries import ENCODER_RECIPE  # benchmarks/ is on sys.path wherever this module is imported

NAME = "ts-encoder-ref"
# Fawaz et al.'s training settings (timeseries.ENCODER_RECIPE), nothing else on top.
TRAIN: dict[str, Any] = {**ENCODER_RECIPE, "ema_decay": 0.0, "keep": "last"}


@dataclass
class EncoderConfig:
    seq_len: int = 96  # T; set from the data
    in_channels: int = 1  # C; set from the data
    num_classes: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive("EncoderConfig", seq_len=self.seq_len, in_channels=self.in_channels, num_classes=self.num_classes)


def _block(c_in: int, c_out: int, kernel: int, dropout: float, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                               nn.InstanceNorm1d(c_out, affine=True, eps=1e-3), nn.PReLU(c_out, init=0.0), nn.Dropout(dropout)]
    if pool:
        layers.append(nn.MaxPool1d(2))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Shape: series (B, C, T) -> logits (B, num_classes)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.blocks = nn.Sequential(_block(c.in_channels, 128, 5, c.dropout, True), _block(128, 256, 11, c.dropout, True),
                                    _block(256, 512, 21, c.dropout, False))
        self.dense = nn.Linear(256, 256)
        self.norm = nn.InstanceNorm1d(256, affine=True, eps=1e-3)
        self.steps = c.seq_len // 4
        self.head = nn.Linear(self.steps * 256, c.num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, series: Tensor) -> Tensor:
        c = self.config
        if series.dim() != 3 or series.shape[1] != c.in_channels or series.shape[2] != c.seq_len:
            raise ValueError(f"Encoder expects series (B, {c.in_channels}, {c.seq_len}), got shape {tuple(series.shape)}")
        h = self.blocks(series)  # (B, 512, T/4)
        data, gate = h[:, :256], torch.softmax(h[:, 256:], dim=1)  # softmax over channels, per step
        h = torch.sigmoid(self.dense((gate * data).transpose(1, 2)))  # (B, T/4, 256)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)  # (B, T/4, 256), normalised per channel over time
        return self.head(h.flatten(1))  # Keras Flatten of (T, C): step-major


def _example(config: EncoderConfig, batch: int = 2) -> tuple[Tensor]:
    return (torch.randn(batch, config.in_channels, config.seq_len),)


if NAME not in list_models():
    register_model(NAME, config=EncoderConfig, example_inputs=_example,
                   description="Fawaz et al. 2019's Encoder (benchmark peer)")(Encoder)
    # The time-series task serves it too, for this benchmark's process only (the table entry is
    # what adding a model to a task family's SPECS does; docs/adding-a-task.md).
    TASKS["timeseries"] = dataclasses.replace(TASKS["timeseries"], models=(*TASKS["timeseries"].models, NAME))
