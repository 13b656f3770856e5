"""A small DETR-style detector (Carion et al. 2020, "End-to-End Object Detection with Transformers").

Image (B, C, H, W) -> CNN backbone (stride ``2 ** len(backbone_channels)``) -> one token per
feature-map cell + fixed 2-D sin-cos positions -> Transformer encoder -> a decoder of learned
object queries that cross-attend to the encoded image -> per query, class logits (the last
class is "no object") and a box (cx, cy, w, h) in [0, 1].

Plain DETR needs ~500 COCO epochs to converge; two published changes make it train in
minutes on a CPU here:
- anchor boxes as queries (DAB-DETR, Liu et al. 2022; Anchor DETR, Wang et al. 2022): each
  query owns a learned reference box, and its positional query is an MLP of the box's sine
  embedding, so cross-attention knows where to look from the first step;
- iterative box refinement (Deformable DETR, Zhu et al. 2021): each decoder layer predicts
  an offset to the previous layer's box (in logit space); the box passed on is detached, as
  in both papers, so each layer learns its own correction.
Every decoder layer's output goes through the same heads, so the objective can add the
auxiliary per-layer losses of DETR.

Output: one packed tensor (B, Q, K + 1 + 4) -- logits of K classes + "no object", then the
box -- so the output is a plain tensor (what the registry's round-trip test, ``capture`` and
ONNX export expect) and every parameter contributes to it. ``split_outputs`` unpacks it.
``forward(images, all_layers=True)`` returns every decoder layer's: (L, B, Q, K + 5).

Explain tools read ``feature_grid`` (h, w): cross-attention key ``j`` is feature cell
``(j // w, j % w)``; decoder modules are named ``decoder.<i>.cross_attn``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.attention.positional import sincos_2d
from attnlab.config import check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, FeedForward, Linear, MultiHeadAttention, TransformerBlock
from attnlab.models.box_ops import inverse_sigmoid
from attnlab.models.registry import register_model

__all__ = ["DetrConfig", "DETR", "DecoderLayer", "split_outputs", "detection_example"]



def detection_example(config, batch: int = 2) -> tuple[Tensor]:
    """A random batch that fits a detection config: (B, C, H, W)."""
    return (torch.randn(batch, config.in_channels, *config.image_size),)


def split_outputs(out: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Packed model output -> (logits (..., K + 1), boxes (..., 4) cxcywh in [0, 1])."""
    return out[..., : num_classes + 1], out[..., num_classes + 1 :]


@dataclass
class DetrConfig:
    image_size: tuple[int, int] = (64, 64)  # (H, W); set from the data
    in_channels: int = 3  # set from the data
    num_classes: int = 3  # K real classes; the model adds "no object"; set from the data
    num_queries: int = 12  # at least the most objects an image holds
    backbone_channels: tuple[int, ...] = (32, 64, 128)  # one stride-2 stage each
    dim: int = 128
    num_heads: int = 4
    encoder_depth: int = 2
    decoder_depth: int = 3
    mlp_ratio: float = 2.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        self.backbone_channels = tuple(int(c) for c in self.backbone_channels)  # type: ignore[assignment]
        if len(self.image_size) != 2:
            raise ConfigError(f"DetrConfig.image_size must be (H, W), got {self.image_size}")
        check_positive("DetrConfig", height=self.image_size[0], width=self.image_size[1], in_channels=self.in_channels,
                       num_classes=self.num_classes, num_queries=self.num_queries, dim=self.dim,
                       num_heads=self.num_heads, decoder_depth=self.decoder_depth, mlp_ratio=self.mlp_ratio)
        if not self.backbone_channels or any(c < 1 for c in self.backbone_channels):
            raise ConfigError(f"DetrConfig.backbone_channels must be positive widths, got {self.backbone_channels}")
        if self.encoder_depth < 0:
            raise ConfigError(f"DetrConfig.encoder_depth must be >= 0, got {self.encoder_depth}")
        stride = self.stride
        if any(s % stride for s in self.image_size):
            raise ConfigError(f"DetrConfig: image_size {self.image_size} must be divisible by the backbone stride {stride}")
        if self.dim % self.num_heads:
            raise ConfigError(f"DetrConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.dim % 8:
            raise ConfigError(f"DetrConfig: dim must be a multiple of 8 (2-D sin-cos and box sine embeddings), got {self.dim}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"DetrConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def stride(self) -> int:
        return 2 ** len(self.backbone_channels)

    @property
    def feature_grid(self) -> tuple[int, int]:
        return (self.image_size[0] // self.stride, self.image_size[1] // self.stride)


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def box_sine_embedding(boxes: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine embedding of each box coordinate (DAB-DETR), ``dim // 4`` features per coordinate.

    Shape: boxes (..., 4) in [0, 1] -> (..., dim).
    """
    per = dim // 4
    freqs = temperature ** (2 * (torch.arange(per // 2, device=boxes.device, dtype=boxes.dtype)) / per)  # (per/2,)
    angles = boxes[..., None] * (2 * math.pi) / freqs  # (..., 4, per/2)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (..., 4, per)
    return emb.flatten(-2)


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention among queries, cross-attention to the image, MLP.

    The positional query (from the reference box) is added to the input of both attentions
    but kept out of the residual stream, as in DETR, so the content stream carries only what
    the layers wrote. Shape: tgt, query_pos (B, Q, C), memory (B, M, C) -> (B, Q, C).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=0.0)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=0.0)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor) -> Tensor:
        h = self.norm1(tgt) + query_pos
        tgt = tgt + self.dropout(self.self_attn(h))
        tgt = tgt + self.dropout(self.cross_attn(self.norm2(tgt) + query_pos, memory))
        return tgt + self.dropout(self.mlp(self.norm3(tgt)))


class _MLP(nn.Sequential):
    def __init__(self, dims: list[int]):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DETR(nn.Module):
    """Shape: images (B, C, H, W) -> (B, Q, K + 5) (or (L, B, Q, K + 5) with ``all_layers``)."""

    def __init__(self, config: DetrConfig):
        super().__init__()
        c = config
        self.config = c
        self.num_classes = c.num_classes
        self.num_queries = c.num_queries
        self.feature_grid = c.feature_grid
        layers: list[nn.Module] = []
        width = c.in_channels
        for out in c.backbone_channels:
            layers += _conv_bn(width, out, 2) + _conv_bn(out, out, 1)
            width = out
        self.backbone = nn.Sequential(*layers)
        self.input_proj = nn.Conv2d(width, c.dim, 1)
        gh, gw = self.feature_grid
        self.register_buffer("pos_embed", sincos_2d(gh, gw, c.dim).reshape(1, gh * gw, c.dim), persistent=False)
        self.encoder = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout) for _ in range(c.encoder_depth)
        )
        self.encoder_norm = nn.LayerNorm(c.dim)
        self.memory_pos = Linear(c.dim, c.dim)  # positions re-added to the keys of cross-attention
        self.query_content = nn.Parameter(torch.zeros(1, c.num_queries, c.dim))
        self.reference_logits = nn.Parameter(_anchor_grid(c.num_queries))  # (Q, 4), inverse-sigmoid boxes
        self.query_pos_mlp = _MLP([c.dim, c.dim, c.dim])
        self.decoder = nn.ModuleList(
            DecoderLayer(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout) for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(c.dim)
        self.class_head = Linear(c.dim, c.num_classes + 1)
        self.box_head = _MLP([c.dim, c.dim, c.dim, 4])
        self._init_weights()

    def _init_weights(self) -> None:
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.query_content, std=0.02)
        # Start every box at its anchor: the last box layer predicts a zero offset.
        last = self.box_head[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def encode(self, images: Tensor) -> Tensor:
        """Shape: (B, C, H, W) -> memory (B, M, C_model), M = h * w feature cells."""
        c = self.config
        if images.dim() != 4 or images.shape[1] != c.in_channels or tuple(images.shape[2:]) != c.image_size:
            raise ValueError(
                f"DETR expects images (B, {c.in_channels}, {c.image_size[0]}, {c.image_size[1]}), got shape {tuple(images.shape)}"
            )
        feats = self.input_proj(self.backbone(images))  # (B, C, h, w)
        x = feats.flatten(2).transpose(1, 2) + self.pos_embed.to(feats.dtype)  # (B, M, C)
        for block in self.encoder:
            x = block(x)
        return self.encoder_norm(x)

    def forward(self, images: Tensor, *, all_layers: bool = False) -> Tensor:
        memory = self.encode(images)  # (B, M, C)
        B = memory.shape[0]
        context = memory + self.memory_pos(self.pos_embed.to(memory.dtype))  # (B, M, C)
        tgt = self.query_content.expand(B, -1, -1)  # (B, Q, C)
        ref = self.reference_logits.sigmoid()[None].expand(B, -1, -1)  # (B, Q, 4)
        outputs = []
        for layer in self.decoder:
            query_pos = self.query_pos_mlp(box_sine_embedding(ref, self.config.dim).to(tgt.dtype))  # (B, Q, C)
            tgt = layer(tgt, query_pos, context)
            h = self.decoder_norm(tgt)
            logits = self.class_head(h)  # (B, Q, K + 1)
            boxes = (self.box_head(h).float() + inverse_sigmoid(ref.float())).sigmoid()  # (B, Q, 4)
            outputs.append(torch.cat([logits.float(), boxes], dim=-1))  # (B, Q, K + 5)
            ref = boxes.detach()
        return torch.stack(outputs) if all_layers else outputs[-1]


def _anchor_grid(num_queries: int) -> Tensor:
    """Initial reference boxes: centres on a near-square grid over the image, size 0.2 (logits)."""
    cols = math.ceil(math.sqrt(num_queries))
    rows = math.ceil(num_queries / cols)
    idx = torch.arange(num_queries, dtype=torch.float32)
    cx = ((idx % cols) + 0.5) / cols
    cy = (torch.div(idx, cols, rounding_mode="floor") + 0.5) / rows
    boxes = torch.stack([cx, cy, torch.full_like(cx, 0.2), torch.full_like(cx, 0.2)], dim=-1)  # (Q, 4)
    return inverse_sigmoid(boxes)


@register_model(
    "detr-tiny", config=DetrConfig, example_inputs=detection_example,
    description="DETR-style detector: stride-8 CNN, 2+3 Transformer layers x 128, 12 anchor queries with box refinement",
)
def detr_tiny(config: DetrConfig) -> DETR:
    return DETR(config)
