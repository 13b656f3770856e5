"""Spectrogram Transformer for audio classification (Gong et al. 2021, "AST: Audio
Spectrogram Transformer"), sized to train from scratch on a CPU.

A log-mel spectrogram (B, 1, n_mels, frames) goes through a convolutional subsampling stem
(3x3 stride-2 convolutions, as speech Transformers do, Dong et al. 2018, Gulati et al. 2020;
early convolutions give a Transformer the locality prior it lacks on small data, Xiao et al.
2021), is cut into non-overlapping (mel bins x frames) patches, gets a class
token and factorised frequency + time positions (Koutini et al. 2022, PaSST: one learned
table per axis, so a patch row shares its frequency code), and runs through pre-norm
Transformer blocks. ``patch_grid`` and ``num_prefix_tokens`` let explain tools map the
attention back onto the spectrogram; ``patch_span`` is the (mel bins, frames) of the input
one token covers: row r of the grid is mel bins [r * span[0], (r + 1) * span[0]), lowest
frequencies first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, Linear, TransformerBlock
from attnlab.layers.init import init_transformer_weights
from attnlab.models.registry import register_model

__all__ = ["AudioTransformerConfig", "AudioTransformer", "spectrogram_example"]



def spectrogram_example(config: AudioTransformerConfig, batch: int = 2) -> tuple[Tensor]:
    """A random spectrogram batch that fits the config: (B, C, n_mels, frames)."""
    return (torch.randn(batch, config.in_channels, config.n_mels, config.frames),)


@dataclass
class AudioTransformerConfig:
    n_mels: int = 32
    frames: int = 64
    in_channels: int = 1
    num_classes: int = 10
    stem_channels: tuple[int, ...] = (16, 32)  # one 3x3 stride-2 conv + BatchNorm + GELU each; () = none
    stem_norm: str = "batch"  # "batch" | "group" (GroupNorm, 1 group: per example) | "none"
    patch_size: tuple[int, int] = (2, 1)  # (mel bins, frames) of the stem's output per token
    dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    pooling: str = "cls"  # "cls" | "mean"
    dropout: float = 0.1
    attn_dropout: float = 0.0

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)  # type: ignore[assignment]
        if len(self.patch_size) != 2:
            raise ConfigError(f"AudioTransformerConfig.patch_size must be (mel bins, frames), got {self.patch_size}")
        check_positive("AudioTransformerConfig", n_mels=self.n_mels, frames=self.frames, in_channels=self.in_channels,
                       num_classes=self.num_classes, patch_mels=self.patch_size[0], patch_frames=self.patch_size[1],
                       dim=self.dim, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        self.stem_channels = tuple(int(ch) for ch in self.stem_channels)  # type: ignore[assignment]
        if any(ch < 1 for ch in self.stem_channels):
            raise ConfigError(f"AudioTransformerConfig.stem_channels must be positive, got {self.stem_channels}")
        check_choice("AudioTransformerConfig", "pooling", self.pooling, ("cls", "mean"))
        check_choice("AudioTransformerConfig", "stem_norm", self.stem_norm, ("batch", "group", "none"))
        span = self.patch_span
        if self.n_mels % span[0] or self.frames % span[1]:
            raise ConfigError(f"AudioTransformerConfig: (n_mels, frames) = ({self.n_mels}, {self.frames}) must be divisible "
                              f"by patch_size x 2^len(stem_channels) = {span}")
        if self.dim % self.num_heads:
            raise ConfigError(f"AudioTransformerConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        for name in ("dropout", "attn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"AudioTransformerConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def patch_span(self) -> tuple[int, int]:
        """(mel bins, frames) of the input spectrogram that one token covers."""
        stride = 2 ** len(self.stem_channels)
        return (self.patch_size[0] * stride, self.patch_size[1] * stride)


class AudioTransformer(nn.Module):
    """Shape: spectrograms (B, C, n_mels, frames) -> logits (B, num_classes)."""

    def __init__(self, config: AudioTransformerConfig):
        super().__init__()
        c = config
        self.config = c
        self.patch_span = c.patch_span
        self.patch_grid = (c.n_mels // self.patch_span[0], c.frames // self.patch_span[1])
        self.num_prefix_tokens = 1 if c.pooling == "cls" else 0
        layers: list[nn.Module] = []
        channels = c.in_channels
        for out in c.stem_channels:  # each halves both axes: (F, T) -> (F / 2, T / 2)
            norm = {"batch": nn.BatchNorm2d(out), "group": nn.GroupNorm(1, out), "none": nn.Identity()}[c.stem_norm]
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=c.stem_norm == "none"), norm, nn.GELU()]
            channels = out
        self.stem = nn.Sequential(*layers)
        self.patch_embed = nn.Conv2d(channels, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pooling == "cls" else None
        self.freq_pos = nn.Parameter(torch.randn(1, self.patch_grid[0], 1, c.dim) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(1, 1, self.patch_grid[1], c.dim) * 0.02)
        self.dropout = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head = Linear(c.dim, c.num_classes)
        self.apply(init_transformer_weights)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (the class token; timm's convention)."""
        return {"cls_token"}

    def forward_features(self, spectrograms: Tensor) -> Tensor:
        """Shape: (B, C, n_mels, frames) -> tokens (B, N, C_model), N = prefix + patches (row-major)."""
        c = self.config
        if spectrograms.dim() != 4 or tuple(spectrograms.shape[1:]) != (c.in_channels, c.n_mels, c.frames):
            raise ValueError(f"AudioTransformer expects spectrograms (B, {c.in_channels}, {c.n_mels}, {c.frames}), "
                             f"got shape {tuple(spectrograms.shape)}")
        x = self.patch_embed(self.stem(spectrograms))  # (B, C, gh, gw): stem (B, C', F / s, T / s) first
        x = x.permute(0, 2, 3, 1) + (self.freq_pos + self.time_pos).to(x.dtype)  # (B, gh, gw, C)
        x = x.flatten(1, 2)  # (B, P, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + P, C)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, spectrograms: Tensor) -> Tensor:
        x = self.forward_features(spectrograms)
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, C)
        return self.head(pooled)


@register_model(
    "audio-transformer", config=AudioTransformerConfig, example_inputs=spectrogram_example,
    description="spectrogram Transformer, conv subsampling stem, 4 layers x 64 wide, 8x4 (mel x frame) tokens (FSDD default)",
)
def audio_transformer(config: AudioTransformerConfig) -> AudioTransformer:
    return AudioTransformer(config)
