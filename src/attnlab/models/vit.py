"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

Patch embedding by a strided convolution, a class token or mean pooling, learned or 2-D
sin-cos positions (MAE), pre-norm Transformer blocks, a linear head. Explain tools read
``patch_grid`` and ``num_prefix_tokens`` to map attention back onto the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.attention import positional
from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, Linear, TransformerBlock
from attnlab.layers.init import init_transformer_weights
from attnlab.models.layer_ids import layer_id_by_prefix
from attnlab.models.registry import register_model

__all__ = ["ViTConfig", "VisionTransformer", "image_example", "ACTIVATIONS"]

# gelu_tanh: Hugging Face's gelu_new / gelu_pytorch_tanh (`attnlab.interop.hf.HIDDEN_ACTIVATIONS`).
# Runs saved before the field existed have none in config.yaml: the default is what they trained with.
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


def image_example(config, batch: int = 2) -> tuple[Tensor]:
    """A random image batch that fits a vision config: (B, C, H, W)."""
    return (torch.randn(batch, config.in_channels, *config.image_size),)


@dataclass
class ViTConfig:
    image_size: tuple[int, int] = (8, 8)
    in_channels: int = 1
    patch_size: int = 2
    num_classes: int = 10
    dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    pooling: str = "cls"  # "cls" | "mean"
    pos_embed: str = "learned"  # "learned" | "sincos"
    stem_channels: int = 0  # > 0: a 3x3 convolutional stem before patchifying (Xiao et al. 2021)
    dropout: float = 0.0
    attn_dropout: float = 0.0
    mlp_dropout: float | None = None  # on the feed-forward's hidden units; None = dropout (HF ViT: 0)
    norm_eps: float = 1e-5  # Hugging Face ViT checkpoints use 1e-12
    activation: str = "gelu"  # the feed-forward's: "gelu" (exact, erf) | "gelu_tanh" (HF gelu_new) | "relu"

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]
        if self.stem_channels < 0:
            raise ConfigError(f"ViTConfig.stem_channels must be >= 0, got {self.stem_channels}")
        check_positive("ViTConfig", in_channels=self.in_channels, patch_size=self.patch_size, num_classes=self.num_classes,
                       dim=self.dim, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        check_choice("ViTConfig", "pooling", self.pooling, ("cls", "mean"))
        check_choice("ViTConfig", "pos_embed", self.pos_embed, ("learned", "sincos"))
        check_choice("ViTConfig", "activation", self.activation, ACTIVATIONS)
        h, w = self.image_size
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(f"ViTConfig: image_size {self.image_size} must be divisible by patch_size={self.patch_size}")
        if self.dim % self.num_heads:
            raise ConfigError(f"ViTConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        for name in ("dropout", "attn_dropout", "mlp_dropout"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"ViTConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.pos_embed == "sincos" and self.dim % 4:
            raise ConfigError(f"ViTConfig: sincos positions need dim divisible by 4, got {self.dim}")


class VisionTransformer(nn.Module):
    """Shape: images (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        c = config
        self.config = c
        self.patch_grid = (c.image_size[0] // c.patch_size, c.image_size[1] // c.patch_size)
        num_patches = self.patch_grid[0] * self.patch_grid[1]
        self.num_prefix_tokens = 1 if c.pooling == "cls" else 0
        # Early convolutions give a ViT the locality prior it lacks on small data (Xiao et al.
        # 2021, "Early Convolutions Help Transformers See Better"); off by default.
        stem_out = c.stem_channels or c.in_channels
        self.stem = (
            nn.Sequential(nn.Conv2d(c.in_channels, stem_out, 3, padding=1, bias=False), nn.BatchNorm2d(stem_out), nn.GELU())
            if c.stem_channels
            else nn.Identity()
        )
        self.patch_embed = nn.Conv2d(stem_out, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pooling == "cls" else None
        n_tokens = num_patches + self.num_prefix_tokens
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, c.dim) * 0.02)
        else:
            table = positional.sincos_2d(*self.patch_grid, c.dim)
            if self.num_prefix_tokens:
                table = torch.cat([torch.zeros(1, c.dim), table])
            self.register_buffer("pos_embed", table[None], persistent=False)
        self.dropout = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout,
                             mlp_dropout=c.mlp_dropout, norm_eps=c.norm_eps, activation=c.activation)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.head = Linear(c.dim, c.num_classes)
        self.apply(init_transformer_weights)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (class token and position table; timm's convention)."""
        return {"cls_token", "pos_embed"}

    @property
    def num_layers(self) -> int:
        """Blocks, for layer-wise lr decay and ``--train.freeze blocks.I-J`` (`attnlab.training.param_groups`)."""
        return self.config.depth

    def layer_id(self, name: str) -> int:
        """0: stem, patch embedding, class token, positions; ``i + 1``: block ``i``; ``depth + 1``: norm, head."""
        return layer_id_by_prefix(name, self.config.depth, after=("norm.", "head."))

    def forward_features(self, images: Tensor) -> Tensor:
        """Shape: (B, C, H, W) -> tokens (B, N, C_model), N = prefix + patches."""
        c = self.config
        if images.dim() != 4 or images.shape[1] != c.in_channels or tuple(images.shape[2:]) != tuple(c.image_size):
            raise ValueError(
                f"VisionTransformer expects images (B, {c.in_channels}, {c.image_size[0]}, {c.image_size[1]}), "
                f"got shape {tuple(images.shape)}"
            )
        x = self.patch_embed(self.stem(images)).flatten(2).transpose(1, 2)  # (B, P, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + P, C)
        x = self.dropout(x + self.pos_embed.to(x.dtype))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: Tensor) -> Tensor:
        x = self.forward_features(images)
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, C)
        return self.head(pooled)


@register_model("vit-tiny", config=ViTConfig, example_inputs=image_example, description="ViT, 4 layers x 64 wide, 2x2 patches (digits default)")
def vit_tiny(config: ViTConfig) -> VisionTransformer:
    return VisionTransformer(config)


@register_model(
    "vit-small",
    config=ViTConfig,
    defaults=dict(image_size=(28, 28), patch_size=4, dim=128, depth=6, num_heads=4, mlp_ratio=2.0),
    example_inputs=image_example,
    description="ViT, 6 layers x 128 wide, 4x4 patches (MNIST default)",
)
def vit_small(config: ViTConfig) -> VisionTransformer:
    return VisionTransformer(config)
