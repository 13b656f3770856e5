"""A Transformer classifier for time series (Vaswani et al. 2017 on 1-D signals).

Series (B, C, T) -> optional convolutional stem -> tokens -> Transformer blocks -> pooled
linear head. Tokens are either one per time step (``patch_size=1``: a value projection, as
in Zerveas et al. 2021, "A Transformer-based Framework for Multivariate Time Series
Representation Learning") or non-overlapping patches of ``patch_size`` steps (Nie et al.
2023, PatchTST). The stem, a few same-length convolutions with batch norm, is the FCN
encoder of Wang et al. 2017 ("Time Series Classification from Scratch with Deep Neural
Networks") in miniature: it gives attention local shape features to compare, the prior a
Transformer lacks on the UCR archive's tiny train sets (Xiao et al. 2021 make the same
point for ViTs). Positions: learned or sin-cos tables added to the tokens, or RoPE / ALiBi /
T5 relative biases inside attention.

``stem_widths`` builds the stem of Fawaz et al. 2019's "Encoder" (after Serrà et al. 2018) instead:
one block per width and kernel (convolution, norm, PReLU, dropout ``stem_dropout``), each but the
last followed by max pooling 2, so a token covers 2 ** (blocks - 1) steps; ``pooling="flatten"``
concatenates the step tokens for the head (the Encoder's flatten head: position-specific weights).
With the Encoder's three blocks (128 / 256 / 512 wide, kernels 5 / 11 / 21, instance norm) and its
training recipe (Adam 1e-5, batch 12) a Transformer layer over them takes the place of the
Encoder's softmax gate.

Explain tools read ``num_prefix_tokens`` (the class token) and ``patch_size``: token
``num_prefix_tokens + i`` covers time steps ``[i * patch_size, (i + 1) * patch_size)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, LearnedPositionalEmbedding, Linear, SinusoidalPositionalEmbedding, TransformerBlock
from attnlab.layers.init import init_transformer_weights
from attnlab.models.registry import register_model

__all__ = ["TimeSeriesConfig", "TimeSeriesTransformer", "series_example"]

POS_EMBEDS = ("learned", "sincos", "rope", "alibi", "relative", "none")
POOLINGS = ("cls", "mean", "cls_mean", "flatten")
STEM_NORMS = ("batch", "instance", "group")
_IN_ATTENTION = {"rope": "rope", "alibi": "alibi", "relative": "relative"}


def series_example(config, batch: int = 2) -> tuple[Tensor]:
    """A random batch that fits a time-series config: (B, C, T)."""
    return (torch.randn(batch, config.in_channels, config.seq_len),)


@dataclass
class TimeSeriesConfig:
    seq_len: int = 96  # T; set from the data
    in_channels: int = 1  # C; set from the data
    num_classes: int = 2  # set from the data
    patch_size: int = 1  # time steps per token; T is zero-padded on the right to a multiple
    stem_channels: int = 0  # > 0: a convolutional stem (FCN-like) before tokenising
    stem_kernels: tuple[int, ...] = (7, 5, 3)  # one Conv1d-norm-GELU per entry, stride 1, same length
    stem_norm: str = "batch"  # "batch" (BatchNorm1d) | "instance" (InstanceNorm1d, affine; the Encoder's) | "group" (1 group)
    stem_widths: tuple[int, ...] = ()  # Encoder stem: one conv-norm-PReLU-dropout block per width (kernels: stem_kernels)
    stem_dropout: float = 0.0  # dropout after each Encoder stem block (the Encoder: 0.2)
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    pooling: str = "cls"  # "cls" | "mean" | "cls_mean" (class token and step-token mean, averaged) | "flatten" (all step tokens)
    pos_embed: str = "learned"  # see POS_EMBEDS
    dropout: float = 0.1
    attn_dropout: float = 0.0

    def __post_init__(self) -> None:
        self.stem_kernels = tuple(int(k) for k in self.stem_kernels)  # type: ignore[assignment]
        self.stem_widths = tuple(int(w) for w in self.stem_widths)  # type: ignore[assignment]
        check_positive("TimeSeriesConfig", seq_len=self.seq_len, in_channels=self.in_channels, num_classes=self.num_classes,
                       patch_size=self.patch_size, dim=self.dim, depth=self.depth, num_heads=self.num_heads,
                       mlp_ratio=self.mlp_ratio)
        check_choice("TimeSeriesConfig", "pooling", self.pooling, POOLINGS)
        check_choice("TimeSeriesConfig", "stem_norm", self.stem_norm, STEM_NORMS)
        check_choice("TimeSeriesConfig", "pos_embed", self.pos_embed, POS_EMBEDS)
        if self.stem_channels < 0:
            raise ConfigError(f"TimeSeriesConfig.stem_channels must be >= 0, got {self.stem_channels}")
        if self.stem_channels and (not self.stem_kernels or any(k < 1 for k in self.stem_kernels)):
            raise ConfigError(f"TimeSeriesConfig.stem_kernels must be positive sizes when stem_channels > 0, got {self.stem_kernels}")
        if self.stem_widths:
            if self.stem_channels:
                raise ConfigError("TimeSeriesConfig: stem_channels (a same-length conv stem) and stem_widths (the Encoder's "
                                  "stem) exclude each other; set one of them")
            if len(self.stem_widths) != len(self.stem_kernels) or min(self.stem_widths + self.stem_kernels) < 1:
                raise ConfigError(f"TimeSeriesConfig: stem_widths {self.stem_widths} and stem_kernels {self.stem_kernels} "
                                  "must be positive and as many")
            if self.stem_steps > self.seq_len:
                raise ConfigError(f"TimeSeriesConfig: {len(self.stem_widths)} stem blocks pool by {self.stem_steps}, more "
                                  f"than seq_len={self.seq_len}")
        if self.patch_size > self.seq_len // self.stem_steps:
            pooled = f" pooled by the stem to {self.seq_len // self.stem_steps} steps" if self.stem_steps > 1 else ""
            raise ConfigError(f"TimeSeriesConfig: patch_size={self.patch_size} is longer than seq_len={self.seq_len}{pooled}")
        if self.dim % self.num_heads:
            raise ConfigError(f"TimeSeriesConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.pos_embed == "sincos" and self.dim % 2:
            raise ConfigError(f"TimeSeriesConfig: sincos positions need an even dim, got {self.dim}")
        if self.pos_embed == "rope" and (self.dim // self.num_heads) % 2:
            raise ConfigError(f"TimeSeriesConfig: rope needs an even head dim, got {self.dim // self.num_heads}")
        for name in ("dropout", "attn_dropout", "stem_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"TimeSeriesConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def stem_steps(self) -> int:
        """Time steps one stem output step covers: the Encoder stem pools by 2 after each block but the last."""
        return 2 ** max(len(self.stem_widths) - 1, 0)

    @property
    def num_patches(self) -> int:
        return math.ceil(self.seq_len // self.stem_steps / self.patch_size)


def _stem_norm(kind: str, channels: int, instance_eps: float = 1e-5) -> nn.Module:
    """Normalisation after each stem convolution: over the batch, over time per series, or per series over all."""
    if kind == "instance":
        return nn.InstanceNorm1d(channels, affine=True, eps=instance_eps)
    if kind == "group":
        return nn.GroupNorm(1, channels)
    return nn.BatchNorm1d(channels)


class TimeSeriesTransformer(nn.Module):
    """Shape: series (B, C, T) -> logits (B, num_classes)."""

    def __init__(self, config: TimeSeriesConfig):
        super().__init__()
        c = config
        self.config = c
        self.patch_size = c.patch_size
        self.num_patches = c.num_patches
        self.num_prefix_tokens = 1 if c.pooling in ("cls", "cls_mean") else 0
        layers: list[nn.Module] = []
        width = c.in_channels
        for k in c.stem_kernels if c.stem_channels else ():
            layers += [nn.Conv1d(width, c.stem_channels, k, padding="same", bias=False), _stem_norm(c.stem_norm, c.stem_channels), nn.GELU()]
            width = c.stem_channels
        for i, (w, k) in enumerate(zip(c.stem_widths, c.stem_kernels)):  # the Encoder's blocks (tf-addons' eps 1e-3)
            layers += [nn.Conv1d(width, w, k, padding=k // 2, bias=False), _stem_norm(c.stem_norm, w, instance_eps=1e-3),
                       nn.PReLU(w, init=0.0), Dropout(c.stem_dropout)]
            layers += [nn.MaxPool1d(2)] if i < len(c.stem_widths) - 1 else []
            width = w
        self.stem = nn.Sequential(*layers) if layers else nn.Identity()
        # patch_size=1: a per-step linear projection; >1: one token per non-overlapping patch.
        self.patch_embed = nn.Conv1d(width, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if self.num_prefix_tokens else None
        n_tokens = self.num_patches + self.num_prefix_tokens
        if c.pos_embed == "learned":
            self.pos_embed: nn.Module | None = LearnedPositionalEmbedding(n_tokens, c.dim)
        elif c.pos_embed == "sincos":
            self.pos_embed = SinusoidalPositionalEmbedding(n_tokens, c.dim)
        else:
            self.pos_embed = None
        self.dropout = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout,
                             positional=_IN_ATTENTION.get(c.pos_embed))
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head = Linear(c.dim * (self.num_patches if c.pooling == "flatten" else 1), c.num_classes)
        self.apply(init_transformer_weights)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def token_spans(self) -> list[tuple[int, int]]:
        """Time steps [start, end) each non-prefix token covers (the last one clipped to T)."""
        p, t = self.patch_size * self.config.stem_steps, self.config.seq_len
        return [(i * p, min((i + 1) * p, t)) for i in range(self.num_patches)]

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (the class token; a learned position table declares its own; timm's convention)."""
        return {"cls_token"}

    def forward_features(self, series: Tensor) -> Tensor:
        """Shape: (B, C, T) -> tokens (B, N, C_model), N = prefix + patches."""
        c = self.config
        if series.dim() != 3 or series.shape[1] != c.in_channels or series.shape[2] != c.seq_len:
            raise ValueError(
                f"TimeSeriesTransformer expects series (B, {c.in_channels}, {c.seq_len}), got shape {tuple(series.shape)}"
            )
        x = self.stem(series)  # (B, C_stem, T / stem_steps)
        pad = self.num_patches * self.patch_size - x.shape[-1]
        if pad:
            x = F.pad(x, (0, pad))  # zero = the mean of a z-normalised series
        x = self.patch_embed(x).transpose(1, 2)  # (B, P, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + P, C)
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, series: Tensor) -> Tensor:
        x = self.forward_features(series)  # (B, N, C)
        pooling = self.config.pooling
        if pooling == "cls":
            pooled = x[:, 0]  # (B, C)
        elif pooling == "mean":
            pooled = x.mean(dim=1)
        elif pooling == "flatten":
            pooled = x.flatten(1)  # (B, P * C), step-major
        else:  # cls_mean
            pooled = 0.5 * (x[:, 0] + x[:, self.num_prefix_tokens:].mean(dim=1))
        return self.head(self.dropout(pooled))


@register_model(
    "ts-transformer", config=TimeSeriesConfig, example_inputs=series_example,
    description="time-series Transformer, 2 layers x 64 wide, one token per step (UCR default adds a conv stem)",
)
def ts_transformer(config: TimeSeriesConfig) -> TimeSeriesTransformer:
    return TimeSeriesTransformer(config)
