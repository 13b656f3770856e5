"""Multi-head attention module (Vaswani et al. 2017) with grouped-query heads
(Ainslie et al. 2023), a KV cache, and RoPE / ALiBi / T5 relative positions.

The module owns projections and state only; the math lives in ``attnlab.attention``.
Attention weights are returned only when asked, or handed to ``weight_hook`` (used by
``attnlab.explain``), computed exactly from q and k beside the fused output.

Optionally (``ATTNLAB_FUSED_QKV=1`` or ``module.fuse_qkv = True``), training self-attention
projects q, k and v in one product against the three weights stacked (Megatron-LM's fused QKV,
Shoeybi et al. 2019; the parameters and state dict stay three ``Linear``): under bf16 autocast
the input is cast once instead of three times and its gradient comes out of one product. Off by
default: on a 2-core Zen 4 its effect on the bf16 and fp32 encoder steps was within run-to-run
noise, both directions (benchmarks/README.md, mfu.py), and a speed route is on by default only
where it measurably pays. Never used with hooks on the projections (explain/), other projection
types, cross-attention, or in eval / no-grad (decoding would re-stack the weights every token).
"""

from __future__ import annotations

import math
import os
from typing import Callable

import torch
from torch import Tensor, nn

from attnlab.attention import attention, attention_weights, positional as pos
from attnlab.attention.functional import select_index
from attnlab.attention.routing import tracing
from attnlab.layers.cache import KVCache
from attnlab.layers.dropout import dropout
from attnlab.layers.linear import Linear, linear
from attnlab.layers.packing import Packing
from attnlab.layers.positional import RelativePositionBias

__all__ = ["MultiHeadAttention", "key_padding_to_mask", "FUSED_QKV_ENV"]

FUSED_QKV_ENV = "ATTNLAB_FUSED_QKV"  # "1": one stacked q/k/v product in training (module docstring)

POSITIONAL_KINDS = (None, "rope", "alibi", "relative")


def key_padding_to_mask(mask: Tensor | None, batch: int, keys: int) -> Tensor | None:
    """Accept a (B, M) key-padding mask (True = real token) or a full bool mask.

    Returns a mask broadcastable to (B, H, N, M): (B, M) becomes (B, 1, 1, M).
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"attention mask must be a bool tensor (True = attend), got {got}")
    if mask.dim() == 2:
        if tuple(mask.shape) != (batch, keys):
            raise ValueError(f"key padding mask must have shape (B, M) = {(batch, keys)}, got {tuple(mask.shape)}")
        return mask[:, None, None, :]
    return mask


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention.

    Shape:
        x (B, N, C), context (B, M, C) -> (B, N, C); weights (B, H, N, M) on request.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        positional: str | None = None,
        backend: str = "auto",
        rope_base: float = 10000.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiHeadAttention: dim={dim} must be divisible by num_heads={num_heads}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"MultiHeadAttention: num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        if positional not in POSITIONAL_KINDS:
            raise ValueError(f"MultiHeadAttention: positional must be one of {POSITIONAL_KINDS}, got {positional!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.positional = positional
        self.backend = backend
        self.rope_base = rope_base
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = Linear(dim, dim, bias=qkv_bias)
        self.k_proj = Linear(dim, kv_dim, bias=qkv_bias)
        self.v_proj = Linear(dim, kv_dim, bias=qkv_bias)
        self.out_proj = Linear(dim, dim)
        self.relative_bias = RelativePositionBias(num_heads) if positional == "relative" else None
        self._alibi = pos.alibi_bias(num_heads) if positional == "alibi" else None
        # explain/ sets this to receive exact weights (B, H, N, M) on every forward, and
        # weight_selection = (heads, query_rows) to have only those computed (bounded memory).
        self.weight_hook: Callable[["MultiHeadAttention", Tensor], None] | None = None
        self.weight_selection: tuple | None = None
        self.fuse_qkv = os.environ.get(FUSED_QKV_ENV, "0") == "1"

    def _fusable(self) -> bool:
        """Whether q, k, v may come from one stacked product (training, plain projections, no hooks)."""
        if not (self.fuse_qkv and self.training and torch.is_grad_enabled()):
            return False
        projs = (self.q_proj, self.k_proj, self.v_proj)
        return all(type(p) is Linear and not p._forward_hooks and not p._forward_pre_hooks for p in projs)

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v from one product: x (B, N, C) @ [Wq; Wk; Wv]^T -> three views (B, N, C | G D | G D)."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projs])  # (C + 2 G D, C)
        bias = torch.cat([p.bias for p in projs]) if self.q_proj.bias is not None else None
        qkv = linear(x, weight, bias)  # (B, N, C + 2 G D)
        kv_dim = self.num_kv_heads * self.head_dim
        return qkv.split([self.dim, kv_dim, kv_dim], dim=-1)

    def _scored_attention(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """softmax(S) v with S = q k^T / sqrt(D) + bias kept: q (B, H, N, D), k, v (B, G, M, D) ->
        out (B, H, N, D), S (B, H, N, M).

        The scale goes on q (N / D times smaller than S here) and a full-size bias is added by the
        product itself (``baddbmm``), so S is written once; residual attention's layers each pay one
        pass over S instead of the four of a product, a scale, an add and the kernel's own product."""
        b, h, n, d = q.shape
        rep = self.num_heads // self.num_kv_heads
        keys = k.repeat_interleave(rep, dim=1) if rep > 1 else k  # (B, H, M, D)
        values = v.repeat_interleave(rep, dim=1) if rep > 1 else v
        m = keys.shape[2]
        q = (q * d ** -0.5).reshape(b * h, n, d)
        keys_t = keys.transpose(-2, -1).reshape(b * h, d, m)
        if bias is not None and bias.shape == (b, h, n, m):
            scores = torch.baddbmm(bias.reshape(b * h, n, m), q, keys_t).view(b, h, n, m)
        else:
            scores = torch.bmm(q, keys_t).view(b, h, n, m)
            scores = scores if bias is None else scores + bias
        weights = dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        return torch.matmul(weights, values), scores

    def _split(self, t: Tensor, heads: int) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, heads, self.head_dim).transpose(1, 2)  # (B, heads, N, D)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        window: int | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
        bias: Tensor | None = None,
        return_scores: bool = False,
        packing: Packing | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``bias``: a float tensor added to the scores, broadcastable to (B, H, N, M), such as
        the previous layer's scores in residual attention (RealFormer, He et al. 2021; PatchTST's
        ``res_attention``). ``return_scores``: also return this call's pre-softmax scores
        ``q k^T * scale + bias`` (B, H, N, M) for the next layer to add; self-attention without
        masks, windows, caches or a positional bias only. ``packing``: x holds only the real tokens,
        (T, C), of a (B, N) batch (``attnlab.layers.packing``); q, k, v are scattered back to
        (B, N, .) for the kernel and the output is (T, C). Self-attention without a cache only."""
        if packing is not None:
            if context is not None or cache is not None or bias is not None or return_scores or return_weights:
                raise ValueError("MultiHeadAttention: packing needs self-attention without a cache, bias, scores or weights")
            if x.dim() != 2 or x.shape[-1] != self.dim or x.shape[0] != packing.index.numel():
                raise ValueError(f"MultiHeadAttention: packed x must be (T={packing.index.numel()}, C={self.dim}), "
                                 f"got shape {tuple(x.shape)}")
        elif x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention: x must be (B, N, C={self.dim}), got shape {tuple(x.shape)}")
        if context is not None and (context.dim() != 3 or context.shape[-1] != self.dim or context.shape[0] != x.shape[0]):
            raise ValueError(f"MultiHeadAttention: context must be (B={x.shape[0]}, M, C={self.dim}), got shape {tuple(context.shape)}")
        extra = bias is not None or return_scores
        if extra and (context is not None or mask is not None or is_causal or window is not None or cache is not None
                      or self.positional in ("alibi", "relative")):
            raise ValueError("MultiHeadAttention: bias / return_scores need plain self-attention (no context, mask, "
                             "causal, window, cache, or ALiBi / relative positions)")
        if return_scores and return_weights:
            raise ValueError("MultiHeadAttention: ask for return_weights or return_scores, not both")
        b, n, c = (packing.batch, packing.length, self.dim) if packing is not None else x.shape
        source = x if context is None else context
        if context is None and self._fusable():
            q, k, v = self._project_qkv(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(source), self.v_proj(source)
        if packing is not None:  # (T, .) -> (B, N, .), zeros at padding
            q, k, v = packing.unpack(q), packing.unpack(k), packing.unpack(v)
        q = self._split(q, self.num_heads)  # (B, H, N, D)
        k = self._split(k, self.num_kv_heads)  # (B, G, M_new, D)
        v = self._split(v, self.num_kv_heads)  # (B, G, M_new, D)
        self_attn = context is None
        past = len(cache) if cache is not None and self_attn else 0
        if self.positional == "rope" and self_attn:
            positions = torch.arange(past, past + n, device=x.device)
            cos, sin = pos.rope_cos_sin(positions, self.head_dim, base=self.rope_base, dtype=q.dtype)
            q, k = pos.apply_rope(q, cos, sin), pos.apply_rope(k, cos, sin)
        if cache is not None:
            if self_attn or len(cache) == 0:
                k, v = cache.update(k, v)  # (B, G, M, D)
            else:  # cross-attention: the encoder's keys were cached at the first step
                k, v = cache.keys, cache.values
        m = k.shape[2]
        if self_attn and self._alibi is not None:
            bias = self._alibi
        elif self_attn and self.relative_bias is not None:
            bias = self.relative_bias.bias_function()
        full_mask = key_padding_to_mask(mask, b, m)
        scores = None
        if return_scores:  # the scores are needed whole anyway: one product makes them and feeds the softmax
            out, scores = self._scored_attention(q, k, v, bias)
        # The kernel when no scores are asked, when traced (export, compile: no data-dependent check), and
        # when a row the bias masks entirely made NaN (the masked kernel gives that row zeros)
        if scores is None or tracing(q) or not torch.isfinite(out).all():
            result = attention(
                q, k, v, mask=full_mask, bias=bias, is_causal=is_causal, window=window,
                dropout_p=self.dropout if self.training else 0.0, backend=self.backend, return_weights=return_weights,
            )
            out, weights = result if return_weights else (result, None)
        else:
            weights = None
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        out = self.out_proj(out if packing is None else packing.pack(out))  # (B, N, C) or packed (T, C)
        if self.weight_hook is not None:
            hook_weights = weights
            if weights is None or self.weight_selection is not None:
                heads, rows = self.weight_selection or (None, None)
                hook_weights = attention_weights(
                    q, k, mask=full_mask, bias=bias, is_causal=is_causal, window=window,
                    heads=select_index(heads, self.num_heads, "head"), query_rows=select_index(rows, n, "query row"),
                )
            self.weight_hook(self, hook_weights)
        if return_scores:
            return out, scores
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim} (scale 1/sqrt({self.head_dim})={1 / math.sqrt(self.head_dim):.4f}), "
            f"positional={self.positional}"
        )
