"""Transformer block: pre-norm by default (Xiong et al. 2020), post-norm as in Vaswani 2017."""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.layers.attention import MultiHeadAttention
from attnlab.layers.cache import KVCache
from attnlab.layers.dropout import Dropout, drop
from attnlab.layers.feedforward import FeedForward
from attnlab.layers.packing import Packing

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each with a residual.

    Shape: x (B, N, C), context (B, M, C) -> (B, N, C); with ``packing`` (self-attention only),
    x holds the real tokens (T, C) and so does the output (``attnlab.layers.packing``).

    ``dropout`` drops each sublayer's output before its residual and, unless ``mlp_dropout``
    says otherwise, the feed-forward's hidden activations (timm's ViT ``Mlp``). BERT, GPT-2 and
    Hugging Face's ViT have no hidden dropout (``mlp_dropout=0``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        mlp_dropout: float | None = None,
        norm_first: bool = True,
        cross_attention: bool = False,
        activation: str = "gelu",
        positional: str | None = None,
        qkv_bias: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(
            dim, num_heads, num_kv_heads=num_kv_heads, qkv_bias=qkv_bias, dropout=attn_dropout, positional=positional
        )
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn = (
            MultiHeadAttention(dim, num_heads, num_kv_heads=num_kv_heads, qkv_bias=qkv_bias, dropout=attn_dropout)
            if cross_attention
            else None
        )
        self.norm_cross = nn.LayerNorm(dim, eps=norm_eps) if cross_attention else None
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), activation=activation,
                               dropout=dropout if mlp_dropout is None else mlp_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.dropout = Dropout(dropout)

    def _drop(self, x: Tensor) -> Tensor:
        return drop(self.dropout, x)

    def _residual(self, x: Tensor, norm: nn.Module, fn) -> Tensor:
        if self.norm_first:
            return x + self._drop(fn(norm(x)))
        return norm(x + self._drop(fn(x)))

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        context_mask: Tensor | None = None,
        is_causal: bool = False,
        window: int | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        packing: Packing | None = None,
    ) -> Tensor:
        x = self._residual(x, self.norm1, lambda h: self.attn(h, mask=mask, is_causal=is_causal, window=window, cache=cache,
                                                               packing=packing))
        if self.cross_attn is not None:
            if packing is not None:
                raise ValueError("TransformerBlock: packing is for self-attention blocks; this one has cross-attention")
            if context is None:
                raise ValueError("TransformerBlock: this block has cross-attention and needs a context (B, M, C)")
            x = self._residual(
                x, self.norm_cross, lambda h: self.cross_attn(h, context, mask=context_mask, cache=cross_cache)
            )
        return self._residual(x, self.norm2, self.mlp)
