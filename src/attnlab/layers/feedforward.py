"""Position-wise feed-forward: GELU MLP (Vaswani 2017, ViT) or SwiGLU (Shazeer 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.layers.dropout import Dropout, drop
from attnlab.layers.linear import Linear

__all__ = ["FeedForward", "activate"]


class FeedForward(nn.Module):
    """Shape: (B, N, C) -> (B, N, C).

    ``activation="swiglu"`` uses a gated hidden layer: silu(x W1) * (x W3) -> W2.
    """

    def __init__(self, dim: int, hidden_dim: int, *, activation: str = "gelu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if activation not in ("gelu", "gelu_tanh", "relu", "swiglu"):
            raise ValueError(f"FeedForward: activation must be 'gelu', 'gelu_tanh', 'relu' or 'swiglu', got {activation!r}")
        self.activation = activation
        self.fc1 = Linear(dim, hidden_dim * (2 if activation == "swiglu" else 1), bias=bias)
        self.fc2 = Linear(hidden_dim, dim, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(drop(self.dropout, activate(self.fc1(x), self.activation)))


def activate(h: Tensor, activation: str) -> Tensor:
    """The hidden activation of ``FeedForward``; swiglu halves the last dimension."""
    if activation == "swiglu":
        gate, value = h.chunk(2, dim=-1)
        return F.silu(gate) * value
    if activation == "gelu":
        return F.gelu(h)
    if activation == "gelu_tanh":  # GPT-2's "gelu_new" (Hendrycks & Gimpel's tanh approximation)
        return F.gelu(h, approximate="tanh")
    return F.relu(h)
