"""PatchTST (Nie et al., ICLR 2023, "A Time Series is Worth 64 Words: Long-term Forecasting
with Transformers"), supervised, on attnlab's attention layers.

Per channel (channel independence: every channel of every window is its own sequence through
the same weights), the window of L steps is instance-normalised (RevIN, Kim et al. 2022),
padded at the end by repeating its last value ``stride`` times and cut into overlapping
patches (``patch_len`` 16, ``stride`` 8: N = (L - patch_len) / stride + 2 patches, 42 at
L = 336). Each patch is projected to ``dim`` and given a learned position (initialised
uniform in +-0.02, the authors' ``pe='zeros'``), then goes through ``depth`` post-norm encoder
layers whose norm is BatchNorm over the model dimension (the paper's default; ``norm="layer"``
for LayerNorm). A flatten head maps the N x dim tokens to the H forecast steps, and RevIN is
undone. Dropout sits where the authors' code has it: after the embedding, twice on the
attention output (their projection dropout and residual dropout), inside the feed-forward,
after it, and in the head (``head_dropout``).

``residual_attention`` (off by default: the paper describes a vanilla encoder) is the authors'
``res_attention=True``, the default of their code: each layer adds the previous layer's
pre-softmax scores to its own (RealFormer, He et al. 2021), and passes the sum on.

Explain tools read ``token_spans()``: token i covers input steps [i * stride, i * stride +
patch_len), the last clipped to L (it holds the padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, FeedForward, MultiHeadAttention
from attnlab.layers.linear import Linear
from attnlab.layers.revin import RevIN
from attnlab.models.dlinear import forecast_example
from attnlab.models.registry import register_model

__all__ = ["PatchTST", "PatchTSTConfig", "PatchTSTLayer", "make_patches"]

NORMS = ("batch", "layer")


def make_patches(x: Tensor, patch_len: int, stride: int, pad_end: bool = True) -> Tensor:
    """Overlapping patches of each series, the end padded by repeating the last value ``stride`` times.

    Shape: x (B, C, L) -> (B, C, N, patch_len), N = (L + pad - patch_len) // stride + 1.
    """
    if pad_end:
        x = F.pad(x, (0, stride), mode="replicate")  # (B, C, L + stride)
    return x.unfold(-1, patch_len, stride)


@dataclass
class PatchTSTConfig:
    seq_len: int = 336  # L; set from the data
    horizon: int = 96  # H; set from the data
    in_channels: int = 1  # C; set from the data
    out_channels: int = 0  # channels forecast (features MS: 1, the last); 0 = in_channels
    patch_len: int = 16
    stride: int = 8
    pad_end: bool = True  # the paper's padding_patch="end": one more patch
    dim: int = 16  # d_model (the paper's ETTh1 setting; 128 on the larger data sets)
    depth: int = 3
    num_heads: int = 4
    ff_dim: int = 128  # d_ff
    dropout: float = 0.3
    attn_dropout: float = 0.0
    head_dropout: float = 0.0
    norm: str = "batch"  # "batch" (BatchNorm1d over dim, the paper's) | "layer"
    revin: bool = True
    revin_affine: bool = True
    subtract_last: bool = False  # RevIN centres on the last value instead of the mean
    residual_attention: bool = False  # the authors' res_attention: scores carried from layer to layer

    def __post_init__(self) -> None:
        check_positive("PatchTSTConfig", seq_len=self.seq_len, horizon=self.horizon, in_channels=self.in_channels,
                       patch_len=self.patch_len, stride=self.stride, dim=self.dim, depth=self.depth,
                       num_heads=self.num_heads, ff_dim=self.ff_dim)
        check_choice("PatchTSTConfig", "norm", self.norm, NORMS)
        if self.patch_len > self.seq_len:
            raise ConfigError(f"PatchTSTConfig: patch_len={self.patch_len} is longer than seq_len={self.seq_len}")
        if self.dim % self.num_heads:
            raise ConfigError(f"PatchTSTConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if not 0 <= self.out_channels <= self.in_channels:
            raise ConfigError(f"PatchTSTConfig.out_channels must be in [0, in_channels={self.in_channels}], got {self.out_channels}")
        for name in ("dropout", "attn_dropout", "head_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"PatchTSTConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def num_patches(self) -> int:
        return (self.seq_len + (self.stride if self.pad_end else 0) - self.patch_len) // self.stride + 1


class _TokenNorm(nn.Module):
    """BatchNorm1d over the model dimension of (B, N, C) tokens (statistics over batch and
    patches), or LayerNorm."""

    def __init__(self, dim: int, kind: str):
        super().__init__()
        self.kind = kind
        self.norm = nn.BatchNorm1d(dim) if kind == "batch" else nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":  # (B N, C) rows: BatchNorm1d's statistics per channel over batch and patches
            return self.norm(x.reshape(-1, x.shape[-1])).view(x.shape)
        return self.norm(x)


class PatchTSTLayer(nn.Module):
    """One post-norm encoder layer as PatchTST's ``TSTEncoderLayer``. Shape: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, *, dropout: float, attn_dropout: float, norm: str):
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.attn_proj_dropout = Dropout(dropout)  # the authors' to_out dropout ...
        self.attn_dropout = Dropout(dropout)  # ... and their residual dropout, both on the attention output
        self.norm1 = _TokenNorm(dim, norm)
        self.mlp = FeedForward(dim, ff_dim, activation="gelu", dropout=dropout)
        self.mlp_dropout = Dropout(dropout)
        self.norm2 = _TokenNorm(dim, norm)

    def forward(self, x: Tensor, prev: Tensor | None = None, *, residual: bool = False) -> tuple[Tensor, Tensor | None]:
        """-> (tokens, scores). With ``residual``, ``prev`` (B, H, N, N) (the previous layer's
        scores, None in the first) is added to this layer's scores, and the sum comes back."""
        if residual:
            attended, scores = self.attn(x, bias=prev, return_scores=True)
        else:
            attended, scores = self.attn(x), None
        x = self.norm1(x + self.attn_dropout(self.attn_proj_dropout(attended)))
        return self.norm2(x + self.mlp_dropout(self.mlp(x))), scores


class PatchTST(nn.Module):
    """Shape: series (B, C, L) -> forecast (B, C_out, H) (the last C_out channels)."""

    def __init__(self, config: PatchTSTConfig):
        super().__init__()
        c = self.config = config
        self.num_patches = c.num_patches
        self.patch_size = c.stride  # explain tools: each token's own (non-overlapping) share of the input
        self.num_prefix_tokens = 0
        self.revin = RevIN(c.in_channels, affine=c.revin_affine, subtract_last=c.subtract_last) if c.revin else None
        self.patch_embed = Linear(c.patch_len, c.dim)
        self.pos_embed = nn.Parameter(torch.empty(self.num_patches, c.dim).uniform_(-0.02, 0.02))
        self.dropout = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            PatchTSTLayer(c.dim, c.num_heads, c.ff_dim, dropout=c.dropout, attn_dropout=c.attn_dropout, norm=c.norm)
            for _ in range(c.depth)
        )
        self.head = Linear(c.dim * self.num_patches, c.horizon)
        self.head_dropout = Dropout(c.head_dropout)

    def token_spans(self) -> list[tuple[int, int]]:
        """Input steps [start, end) each token (patch) covers, clipped to L."""
        c = self.config
        return [(i * c.stride, min(i * c.stride + c.patch_len, c.seq_len)) for i in range(self.num_patches)]

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, series: Tensor) -> Tensor:
        c = self.config
        if series.dim() != 3 or series.shape[1] != c.in_channels or series.shape[2] != c.seq_len:
            raise ValueError(f"PatchTST expects series (B, {c.in_channels}, {c.seq_len}), got shape {tuple(series.shape)}")
        B, C, _ = series.shape
        x, stats = self.revin.normalise(series) if self.revin is not None else (series, None)  # (B, C, L)
        patches = make_patches(x, c.patch_len, c.stride, c.pad_end)  # (B, C, N, P)
        N = patches.shape[2]
        tokens = self.patch_embed(patches.reshape(B * C, N, c.patch_len)) + self.pos_embed  # (B*C, N, D)
        tokens = self.dropout(tokens)
        scores = None
        for block in self.blocks:
            tokens, scores = block(tokens, scores, residual=c.residual_attention)
        out = self.head(tokens.reshape(B, C, N * c.dim))  # (B, C, H); patch-major flatten (the order is immaterial to a dense map)
        out = self.head_dropout(out)
        if stats is not None:
            out = self.revin.denormalise(out, stats)
        return out[:, -c.out_channels:] if c.out_channels else out


@register_model("patchtst", config=PatchTSTConfig, example_inputs=forecast_example,
                description="PatchTST forecaster: RevIN, 16-step patches (stride 8), 3 layers x 16 wide, channel-independent")
def patchtst(config: PatchTSTConfig) -> PatchTST:
    return PatchTST(config)
