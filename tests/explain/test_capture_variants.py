"""capture against an independent float64 softmax for every attention variant the models use:
ALiBi, RoPE (with grouped heads, padding and a KV cache), T5 relative bias, windows, cross-attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnlab.explain import capture


class _One(nn.Module):
    """One attention module as a model, its projections' outputs and out_proj's input recorded."""

    def __init__(self, attn):
        super().__init__()
        self.attn, self.seen = attn, {}
        for name in ("q_proj", "k_proj", "v_proj"):
            getattr(attn, name).register_forward_hook(lambda m, a, o, name=name: self.seen.__setitem__(name, o))
        attn.out_proj.register_forward_pre_hook(lambda m, a: self.seen.__setitem__("out", a[0]))

    def forward(self, x, context=None, **kw):
        return self.attn(x, context, **kw)


def _rotate(t, positions):
    """RoPE written out (Su et al. 2021, rotate-half pairing): (B, H, N, D), (N,) -> (B, H, N, D)."""
    d = t.shape[-1]
    angles = positions[:, None].double() / 10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = angles.cos(), angles.sin()
    a, b = t[..., : d // 2], t[..., d // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


@pytest.mark.parametrize("case", ["alibi-causal", "rope-gqa-padding", "relative", "window", "causal-window",
                                  "cross-padding", "cache-rope"])
def test_capture_every_variant_against_float64_softmax_and_the_fused_output(case):
    """Captured weights = softmax(q k^T / sqrt(D) + bias, masked), written out here from the
    module's own projections; and weights @ V reproduces what the fused kernel fed out_proj."""
    from attnlab.layers import KVCache, MultiHeadAttention

    positional = {"alibi-causal": "alibi", "rope-gqa-padding": "rope", "relative": "relative",
                  "cache-rope": "rope"}.get(case)
    attn = MultiHeadAttention(16, 4, num_kv_heads=2 if "gqa" in case else None, positional=positional).double().eval()
    if attn.relative_bias is not None:
        attn.relative_bias.embedding.weight.data.normal_(0, 1.0)  # visible against the scores
    model = _One(attn)
    b, n, past = 2, 7, 5 if case == "cache-rope" else 0
    x = torch.randn(b, n, 16, dtype=torch.float64)
    context = torch.randn(b, 5, 16, dtype=torch.float64) if case.startswith("cross") else None
    m = past + n if context is None else 5
    mask = None
    if "padding" in case:
        mask = torch.ones(b, m, dtype=torch.bool)
        mask[1, m - 2:] = False
    kw = dict(mask=mask, is_causal="causal" in case or case == "cache-rope",
              window=2 if "window" in case else None)
    cache = None
    if past:
        cache = KVCache()
        with torch.no_grad():
            attn(torch.randn(b, past, 16, dtype=torch.float64), is_causal=True, cache=cache)
        keys_before, values_before = cache.keys.clone(), cache.values.clone()  # (B, G, past, D), keys rotated
        kw["cache"] = cache
    with torch.no_grad():
        plain = attn(x, context, **{**kw, "cache": None}) if not past else None
    maps = capture(model, x, context, **kw)
    got = maps.maps[0]
    h, g, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = model.seen["q_proj"].view(b, n, h, d).transpose(1, 2)
    k = model.seen["k_proj"].view(b, -1, g, d).transpose(1, 2)
    v = model.seen["v_proj"].view(b, -1, g, d).transpose(1, 2)
    if positional == "rope":
        q, k = _rotate(q, torch.arange(past, past + n)), _rotate(k, torch.arange(past, past + n))
    if past:
        k, v = torch.cat([keys_before, k], 2), torch.cat([values_before, v], 2)
    k, v = k.repeat_interleave(h // g, 1), v.repeat_interleave(h // g, 1)  # (B, H, M, D)
    i = torch.arange(n)[:, None] + (m - n)  # query positions, bottom-right aligned
    j = torch.arange(m)[None, :]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if positional == "alibi":  # Press et al. 2022: slopes 2^(-8 k / H), k = 1..H
        slopes = torch.tensor([2.0 ** (-8 * (s + 1) / h) for s in range(h)], dtype=torch.float64)
        scores = scores - slopes[:, None, None] * (i - j).abs()
    if positional == "relative":  # T5 buckets, as transformers computes them
        t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
        buckets = t5.T5Attention._relative_position_bucket(j - i, bidirectional=True, num_buckets=32, max_distance=128)
        scores = scores + attn.relative_bias.embedding.weight.double()[buckets].permute(2, 0, 1)
    keep = torch.ones(b, 1, n, m, dtype=torch.bool)
    if mask is not None:
        keep = keep & mask[:, None, None, :]
    if kw["is_causal"]:
        keep = keep & (j <= i)
    if kw["window"] is not None:
        keep = keep & ((i - j) <= 2) & ((j - i) <= 2 if not kw["is_causal"] else True)
    want = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    fed = (got @ v).transpose(1, 2).reshape(b, n, 16)  # what out_proj must have received
    torch.testing.assert_close(model.seen["out"], fed, rtol=0, atol=1e-12)
    if mask is not None:
        assert torch.all(got[1, ..., m - 2:] == 0)
    if plain is not None:
        assert torch.equal(maps.output, plain)  # capturing changed nothing
