"""Incremental decoding of a ``TransformerLM`` without the per-module overhead.

Decoding one token runs ~20 small operations per block, so at the sizes people sample from
on a CPU the time goes to Python and dispatch, not arithmetic. ``FusedDecoder`` takes the
weights of an eval-mode ``TransformerLM`` once per ``generate`` call and then runs each step
as plain tensor calls: one product for the concatenated query/key/value projection (instead
of three), layer norms and the MLP through ``torch.nn.functional``, keys and values written
into preallocated (B, G, T, D) buffers, SDPA over the filled part (no mask for a single new
token; causal for the prompt), and the LM head on the last position only. Products go through
``attnlab.layers.linear`` (oneDNN on CPU float32 where that is faster). Measured: 1.07-1.08x
the module path's tokens/s for a 4 x 256 GPT-2 at B = 1 / 8 (2-core EPYC, alternating calls).

With ``packed=True`` (CPU float32, oneDNN available: ``packable``) every product runs on a copy
of its weight reordered into oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``,
as Inductor prepacks weights for CPU inference). A decode step's products have only B rows. On
the 2-core Zen 4 measured, at B = 8, the prepacked weight ran the larger ones faster than the
faster plain route (the 8,000-word head 182 vs 345 us, 256 -> 1,024 39 vs 57 us, 256 -> 768 33 vs
45 us) and the 256 x 256 one slower (29 vs 16 us); over a whole generate call it won (1.2x at
B = 1, 1.4x at B = 8). The copies stay with the model, per batch size, for the next ``generate``
until a parameter changes (``_version``). ``generate`` takes this route only where it measures
faster (autotune family ``decode.fused``, candidate ``packed``).

It computes what ``TransformerLM.forward`` with KV caches computes (a test checks the logits
and the greedy tokens). ``FusedDecoder.supports(model)`` says whether a model has the layout it
handles: pre-norm self-attention blocks, positions added at the input (learned / sin-cos /
none), no attention hook, eval mode. Anything else keeps the module path.

Shapes: tokens (B, n) -> logits of the last position (B, V).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.layers.cache import reserve
from attnlab.layers.feedforward import activate
from attnlab.layers.linear import _mm as onednn_linear, linear, onednn_linear_available

__all__ = ["FusedDecoder", "packable"]


class FusedDecoder:
    """Greedy/sampling steps of one ``TransformerLM`` for a batch of B rows, up to ``max_length`` positions."""

    @torch.no_grad()
    def __init__(self, model: nn.Module, batch: int, max_length: int, *, packed: bool = False):
        self.model = model
        self.max_length = max_length
        self.length = 0
        self.packed = packed and packable(model)
        # Per product (per block qkv, out, fc1, fc2; then the head): the weights stacked into its (N, K)
        # weight, and its bias. The stacking runs only where no packed copy is cached.
        parts: list[tuple[Tensor, ...]] = []
        biases: list[Tensor | None] = []
        for block in model.blocks:
            a, mlp = block.attn, block.mlp
            qkv_biases = [p.bias for p in (a.q_proj, a.k_proj, a.v_proj)]
            parts += [(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),  # -> (C + 2 G D, C)
                      (a.out_proj.weight,), (mlp.fc1.weight,), (mlp.fc2.weight,)]
            biases += [None if any(b is None for b in qkv_biases) else torch.cat(qkv_biases),
                       a.out_proj.bias, mlp.fc1.bias, mlp.fc2.bias]
        parts.append((model.lm_head.weight,))
        biases.append(model.lm_head.bias)
        weights = _packed_weights(model, parts, batch) if self.packed else [_stacked(p) for p in parts]
        products = list(zip(weights, biases))
        self.layers = [(block.norm1, block.norm2, block.mlp.activation, *products[4 * i : 4 * i + 4])
                       for i, block in enumerate(model.blocks)]
        self.head = products[-1]
        a = model.blocks[0].attn
        self.heads, self.kv_heads, self.head_dim, self.dim = a.num_heads, a.num_kv_heads, a.head_dim, a.dim
        self.batch = batch
        # (B, G, T, D) per block, allocated at the first step in the dtype keys come out in (autocast), grown by `reserve`.
        self.keys: list[Tensor | None] = [None] * len(self.layers)
        self.values: list[Tensor | None] = [None] * len(self.layers)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        from attnlab.models.lm import TransformerLM

        if not isinstance(model, TransformerLM) or model.training or len(model.blocks) == 0:
            return False
        for block in model.blocks:
            a = block.attn
            if not block.norm_first or block.cross_attn is not None or a.positional is not None:
                return False
            if a.weight_hook is not None or a.backend != "auto":
                return False
        return True

    def _product(self, x: Tensor, weight_bias: tuple[Tensor, Tensor | None]) -> Tensor:
        """x (..., K) @ W (N, K)^T + b -> (..., N), oneDNN on the packed weight, else ``attnlab.layers.linear``."""
        return (onednn_linear if self.packed else linear)(x, *weight_bias)

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """Feed tokens (B, n) after those already fed; logits of the last one (B, V) float32."""
        model, (b, n) = self.model, tokens.shape
        start, end = self.length, self.length + n
        if end > self.max_length:
            raise ValueError(f"FusedDecoder: {end} positions exceed max_length={self.max_length}")
        x = F.embedding(tokens, model.token_embed.weight)  # (B, n, C)
        if model.pos_embed is not None:
            x = model.pos_embed(x, offset=start)
        hq, g, d, c = self.heads, self.kv_heads, self.head_dim, self.dim
        for i, (norm1, norm2, activation, qkv_proj, out_proj, fc1, fc2) in enumerate(self.layers):
            h = F.layer_norm(x, (c,), norm1.weight, norm1.bias, norm1.eps)
            qkv = self._product(h, qkv_proj)  # (B, n, C + 2 G D)
            q = qkv[..., :c].view(b, n, hq, d).transpose(1, 2)  # (B, H, n, D)
            k = qkv[..., c : c + g * d].view(b, n, g, d).transpose(1, 2)  # (B, G, n, D)
            v = qkv[..., c + g * d :].view(b, n, g, d).transpose(1, 2)
            self.keys[i] = reserve(self.keys[i], k, start, end, self.max_length)  # (B, G, >= end, D)
            self.values[i] = reserve(self.values[i], v, start, end, self.max_length)
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            if n == 1 or start == 0:  # one new token sees every key; a prompt is plain causal
                att = F.scaled_dot_product_attention(q, self.keys[i][:, :, :end], self.values[i][:, :, :end],
                                                     is_causal=n > 1, enable_gqa=g != hq)
            else:
                att = self._attend_chunk(q, i, start, end)
            x = x + self._product(att.transpose(1, 2).reshape(b, n, c), out_proj)
            h = F.layer_norm(x, (c,), norm2.weight, norm2.bias, norm2.eps)
            x = x + self._product(activate(self._product(h, fc1), activation), fc2)  # FeedForward in eval
        self.length = end
        last = F.layer_norm(x[:, -1], (c,), model.norm.weight, model.norm.bias, model.norm.eps)  # (B, C)
        return self._product(last, self.head).float()

    def _attend_chunk(self, q: Tensor, i: int, start: int, end: int) -> Tensor:
        """Several new tokens after a filled cache: causal, aligned bottom-right."""
        n = end - start
        allowed = torch.ones(n, end, dtype=torch.bool, device=q.device).tril(start)  # (n, end)
        return F.scaled_dot_product_attention(q, self.keys[i][:, :, :end], self.values[i][:, :, :end],
                                              attn_mask=allowed, enable_gqa=self.kv_heads != self.heads)


def packable(model: nn.Module) -> bool:
    """Whether ``FusedDecoder(packed=True)`` can reorder this model's weights: float32 on a CPU
    whose torch build has oneDNN's linear (``ATTNLAB_ONEDNN_LINEAR`` not 0), no autocast."""
    weight = model.lm_head.weight
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and onednn_linear_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


# model -> (what its packed weights were made from, {batch: the packed weights}): reused by the next
# decoder while the parameters are the same tensors, unmodified (an optimizer step or a load bumps
# ``_version``).
_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[int, list[Tensor]]]]" = weakref.WeakKeyDictionary()


def _stacked(parts: tuple[Tensor, ...]) -> Tensor:
    """The (N, K) weight of one product: its parts' rows stacked (no copy for a single part)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _packed_weights(model: nn.Module, parts: list[tuple[Tensor, ...]], batch: int) -> list[Tensor]:
    """oneDNN-blocked copies of the stacked weights for products of ``batch`` rows, made once per model state."""
    state = tuple((p.data_ptr(), p._version) for p in model.parameters())
    made_from, by_batch = _PACKED.get(model, (None, {}))
    if made_from != state:
        by_batch = {}
        _PACKED[model] = (state, by_batch)
    if batch not in by_batch:
        by_batch[batch] = [torch.ops.mkldnn._reorder_linear_weight(_stacked(p), batch) for p in parts]
    return by_batch[batch]
