"""Attention blocks for CNN feature maps of shape (B, C, H, W).

In this file H and W are the spatial height and width (not heads); the number of attention
heads is written ``heads`` in shape comments and HW = H * W is the number of positions.

- ``NonLocalBlock2d``: Wang, Girshick, Gupta & He 2018, "Non-local Neural Networks"
  (CVPR), embedded-Gaussian form = dot-product self-attention over all positions with a
  residual connection, here multi-head and scaled by 1/sqrt(head_dim) as in Vaswani 2017.
- ``SqueezeExcite``: Hu, Shen & Sun 2018, "Squeeze-and-Excitation Networks" (CVPR).
- ``ChannelAttention``, ``SpatialAttention``, ``CBAM``: Woo, Park, Lee & Kweon 2018,
  "CBAM: Convolutional Block Attention Module" (ECCV).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.layers.linear import Linear

__all__ = [
    "NonLocalBlock2d",
    "SqueezeExcite",
    "ChannelAttention",
    "SpatialAttention",
    "CBAM",
]


def _check_feature_map(name: str, x: Tensor, channels: int | None) -> None:
    """Raise a ValueError naming the expected and actual shape of a (B, C, H, W) input."""
    expected = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{name} expects input of shape {expected}, got {tuple(x.shape)}")


def _hidden_size(channels: int, reduction: int, min_hidden: int) -> int:
    if channels <= 0 or reduction <= 0 or min_hidden <= 0:
        raise ValueError(
            f"channels, reduction and min_hidden must be positive, got channels={channels}, "
            f"reduction={reduction}, min_hidden={min_hidden}"
        )
    # The floor keeps the bottleneck from collapsing to 0 units for narrow layers.
    return max(min_hidden, channels // reduction)


class NonLocalBlock2d(nn.Module):
    """Non-local (self-attention) block over the H*W positions of a feature map.

    ``y = x + W_out(softmax(Q K^T / sqrt(d)) V)`` with Q, K, V and W_out 1x1 convolutions.
    With ``zero_init=True`` the output projection starts at zero, so the block is the
    identity at initialisation and can be inserted into a pretrained network without
    changing its behaviour (the paper zero-initialises the BN scale after W_out instead).

    Args:
        channels: C, the input and output channels.
        inner_channels: channels of Q/K/V; defaults to C // 2 (the paper's bottleneck).
        num_heads: attention heads; must divide ``inner_channels``.
        zero_init: zero the output projection so the block starts as the identity.

    Shape:
        x: (B, C, H, W) -> y: (B, C, H, W); weights: (B, heads, HW, HW).
    """

    def __init__(
        self,
        channels: int,
        *,
        inner_channels: int | None = None,
        num_heads: int = 1,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if inner_channels is None:
            inner_channels = max(1, channels // 2)
        if channels <= 0 or inner_channels <= 0 or num_heads <= 0:
            raise ValueError(
                f"channels, inner_channels and num_heads must be positive, got "
                f"channels={channels}, inner_channels={inner_channels}, num_heads={num_heads}"
            )
        if inner_channels % num_heads != 0:
            raise ValueError(
                f"inner_channels={inner_channels} must be divisible by num_heads={num_heads}"
            )
        self.channels = channels
        self.inner_channels = inner_channels
        self.num_heads = num_heads
        self.head_dim = inner_channels // num_heads
        self.q_proj = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.k_proj = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.v_proj = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.out_proj = nn.Conv2d(inner_channels, channels, kernel_size=1)
        if zero_init:
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, t: Tensor) -> Tensor:
        B, _, H, W = t.shape
        # Channel c = head * head_dim + d, matching the usual (heads, D) channel split.
        t = t.reshape(B, self.num_heads, self.head_dim, H * W)  # (B, heads, D, HW)
        return t.transpose(-2, -1)  # (B, heads, HW, D)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        _check_feature_map(type(self).__name__, x, self.channels)
        B, C, H, W = x.shape
        q = self._split_heads(self.q_proj(x))  # (B, heads, HW, D)
        k = self._split_heads(self.k_proj(x))  # (B, heads, HW, D)
        v = self._split_heads(self.v_proj(x))  # (B, heads, HW, D)
        weights: Tensor | None = None
        if return_weights:
            # Fused SDPA cannot hand back its probabilities, so the explicit path is taken
            # only when they are asked for; it is the same math, exact softmax.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, heads, HW, HW)
            weights = scores.softmax(dim=-1)
            out = weights @ v  # (B, heads, HW, D)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, D)
        out = out.transpose(-2, -1).reshape(B, self.inner_channels, H, W)  # (B, inner, H, W)
        y = x + self.out_proj(out)  # (B, C, H, W)
        if return_weights:
            return y, weights
        return y

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inner_channels={self.inner_channels}, "
            f"num_heads={self.num_heads}"
        )


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation: rescale channels by a gate computed from their global mean.

    ``s = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``, ``y = x * s`` (Hu 2018, eq. 2-4).
    The bottleneck has ``max(min_hidden, channels // reduction)`` units.

    Shape:
        x: (B, C, H, W) -> y: (B, C, H, W).
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = _hidden_size(channels, reduction, min_hidden)
        self.channels = channels
        self.fc1 = Linear(channels, hidden)
        self.fc2 = Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        _check_feature_map(type(self).__name__, x, self.channels)
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))  # (B, C)
        return x * gate[:, :, None, None]  # (B, C, H, W)


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``Mc = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``.

    The MLP is shared between the two pooled descriptors (Woo 2018, eq. 2); max pooling
    adds the most distinctive feature per channel that the SE mean alone misses.
    ``min_hidden`` defaults to 1 so ``channels // reduction`` is used as in the paper.

    Shape:
        x: (B, C, H, W) -> y: (B, C, H, W); weights: (B, C, 1, 1).
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_hidden: int = 1) -> None:
        super().__init__()
        hidden = _hidden_size(channels, reduction, min_hidden)
        self.channels = channels
        self.fc1 = Linear(channels, hidden)
        self.fc2 = Linear(hidden, channels)

    def _mlp(self, t: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(t)))

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        _check_feature_map(type(self).__name__, x, self.channels)
        avg = x.mean(dim=(2, 3))  # (B, C)
        mx = x.amax(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self._mlp(avg) + self._mlp(mx))[:, :, None, None]  # (B, C, 1, 1)
        y = x * gate  # (B, C, H, W)
        return (y, gate) if return_weights else y


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``Ms = sigmoid(conv([mean_c(x); max_c(x)]))``.

    A single k x k convolution over the channel-wise mean and max maps (Woo 2018, eq. 3);
    ``kernel_size`` must be odd so "same" padding keeps H x W. The paper's conv is followed
    by BatchNorm; here the conv carries a bias instead, which keeps the block batch-size
    independent.

    Shape:
        x: (B, C, H, W) -> y: (B, C, H, W); weights: (B, 1, H, W).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        _check_feature_map(type(self).__name__, x, None)
        pooled = torch.cat(
            [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1
        )  # (B, 2, H, W)
        spatial = torch.sigmoid(self.conv(pooled))  # (B, 1, H, W)
        y = x * spatial  # (B, C, H, W)
        return (y, spatial) if return_weights else y


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    The sequential channel-first order is the one the paper found best (Woo 2018, sec. 4.1).
    ``forward(x, return_weights=True)`` also returns the spatial map, the part that is
    meaningful to plot over the image.

    Shape:
        x: (B, C, H, W) -> y: (B, C, H, W); spatial_map: (B, 1, H, W).
    """

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channels = channels
        self.channel_attention = ChannelAttention(channels, reduction=reduction)
        self.spatial_attention = SpatialAttention(kernel_size=kernel_size)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        _check_feature_map(type(self).__name__, x, self.channels)
        y = self.channel_attention(x)  # (B, C, H, W)
        y, spatial = self.spatial_attention(y, return_weights=True)  # (B, C, H, W), (B, 1, H, W)
        return (y, spatial) if return_weights else y
