"""Weight initialisation shared by the Transformer models."""

from __future__ import annotations

from torch import nn

__all__ = ["init_transformer_weights"]


def init_transformer_weights(module: nn.Module) -> None:
    """timm's ViT init for ``model.apply``: truncated-normal (std 0.02) linears, zero biases.

    Convolutions, norms and embeddings keep PyTorch's defaults.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
