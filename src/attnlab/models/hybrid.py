"""CNN + self-attention hybrid classifier: the seed's "self-attention inside CNNs".

A small convolutional stem with CBAM channel/spatial attention (Woo et al. 2018), a
non-local block (Wang et al. 2018) over the feature map, then Transformer blocks over the
feature-map positions as tokens (the hybrid of Dosovitskiy et al. 2021, sec. 3.1), mean
pooled into a linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attnlab.config import check_positive
from attnlab.errors import ConfigError
from attnlab.layers import CBAM, Linear, NonLocalBlock2d, TransformerBlock
from attnlab.models.registry import register_model
from attnlab.layers.init import init_transformer_weights
from attnlab.models.vit import image_example

__all__ = ["HybridConfig", "HybridCNNAttention"]


@dataclass
class HybridConfig:
    image_size: tuple[int, int] = (8, 8)
    in_channels: int = 1
    num_classes: int = 10
    channels: int = 64
    stages: int = 1  # each stage after the first halves the resolution
    depth: int = 1  # Transformer blocks over feature-map tokens
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]
        check_positive("HybridConfig", in_channels=self.in_channels, num_classes=self.num_classes, channels=self.channels,
                       stages=self.stages, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        if self.depth < 0:
            raise ConfigError(f"HybridConfig.depth must be >= 0, got {self.depth}")
        if self.channels % self.num_heads:
            raise ConfigError(f"HybridConfig: channels={self.channels} must be divisible by num_heads={self.num_heads}")
        shrink = 2 ** (self.stages - 1)
        if self.image_size[0] % shrink or self.image_size[1] % shrink:
            raise ConfigError(f"HybridConfig: image_size {self.image_size} must be divisible by 2**(stages-1)={shrink}")


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(8, cout), nn.GELU())


class HybridCNNAttention(nn.Module):
    """Shape: images (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        c = config
        self.config = c
        layers: list[nn.Module] = [_conv(c.in_channels, c.channels, 1), _conv(c.channels, c.channels, 1)]
        for _ in range(c.stages - 1):
            layers.append(_conv(c.channels, c.channels, 2))
        self.stem = nn.Sequential(*layers)
        self.cbam = CBAM(c.channels, reduction=4)
        self.non_local = NonLocalBlock2d(c.channels, num_heads=1)
        shrink = 2 ** (c.stages - 1)
        self.patch_grid = (c.image_size[0] // shrink, c.image_size[1] // shrink)
        self.num_prefix_tokens = 0
        self.blocks = nn.ModuleList(
            TransformerBlock(c.channels, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.channels)
        self.head = Linear(c.channels, c.num_classes)
        self.apply(init_transformer_weights)

    def forward(self, images: Tensor) -> Tensor:
        c = self.config
        if images.dim() != 4 or images.shape[1] != c.in_channels or tuple(images.shape[2:]) != tuple(c.image_size):
            raise ValueError(
                f"HybridCNNAttention expects images (B, {c.in_channels}, {c.image_size[0]}, {c.image_size[1]}), "
                f"got shape {tuple(images.shape)}"
            )
        x = self.non_local(self.cbam(self.stem(images)))  # (B, C, h, w)
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(dim=1))


@register_model("hybrid-cnn", config=HybridConfig, example_inputs=image_example, description="CNN stem + CBAM + non-local block + Transformer")
def hybrid_cnn(config: HybridConfig) -> HybridCNNAttention:
    return HybridCNNAttention(config)
